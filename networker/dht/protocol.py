"""The DHT's wire protocol: kademlia's ``KademliaProtocol`` with topic announce/lookup RPCs.

Theory of operation
-------------------
Transport is kademlia's (rpcudp): one UDP datagram per request and per reply, ``type byte (0
request, 1 reply) | 20-byte message id | u-msgpack [name, args]``. This subclass changes what
is served and hardens the receive path; it keeps kademlia's routing table and node model.

Inbound RPCs served (anything else is ignored, including kademlia's ``store``/``find_value``
which hold one value per key and cannot carry many signed records):

``ping(nodeid) -> nodeid``
``find_node(nodeid, key[, cookie]) -> [[id, ip, port], ...]``
``lookup(nodeid, key[, cookie]) -> [records, nodes, token, cookie]``
    ``records``: the valid records held under ``key`` (encoded, shuffled, truncated so the reply
    fits in :data:`MAX_DATAGRAM`); ``nodes``: the 1.5 k closest contacts known, so an iterative lookup
    can go on; ``token``: an announce token for the *sender's real address and this key*;
    ``cookie``: proof of the sender's address (:mod:`.tokens`).
``announce(nodeid, record, token) -> bool``
    stored only if ``token`` was issued to the address the datagram came from for the key the
    record lives under, and the record verifies. So a forged STORE from a socket that never
    looked the key up is refused, and a spoofed source address never sees the token it needs.

Amplification: a request without a valid cookie for its source address gets an answer at most
:data:`~.tokens.AMPLIFICATION` times its own size: ``lookup`` answers ``[[], [], b"", cookie]``,
``find_node`` as many contacts as fit. :meth:`DHTProtocol.call_lookup` keeps the cookies it gets
(per address, bounded) and asks again with the cookie at once, so a crawl pays one extra round
trip per node per cookie lifetime.

Receive-path hardening over rpcudp: malformed datagrams (undecodable, an RPC name that is not a
string, wrong argument shapes or types) and unknown RPCs are dropped without raising, counted
(``dropped_datagrams``) and logged at debug level at most a few lines per 10 s; requests are
answered synchronously (no orphan tasks); replies for calls that were abandoned (a lookup
finished without them) are dropped. The per-RPC timeout is ``rpc_timeout`` (rpcudp's
``_wait_timeout``). A timed-out contact is removed from the routing table (kademlia's
``handle_call_response``) and remembered as *recently dead* for :data:`DEAD_MEMORY` seconds or
until it is heard from again: lookups skip it when others hand it out, and this node never
hands it out. The stall estimate that lookups use is SRTT + 4 RTTVAR of answered calls,
restarted after :data:`RTT_MEMORY` idle seconds from the windowed minimum RTT (a seeker's
estimate from a busy past would otherwise make it wait on dead contacts far longer than
needed); ``find_neighbors`` ranks all contacts (:class:`DHTRoutingTable`, kademlia's traversal
can stop early); this node never adds itself (``welcome_if_new``, which also no longer
re-hashes keys: records are not pushed to new nodes, their owners re-announce them).
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import logging
import os
import random
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import msgpack
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable
from rpcudp.exceptions import MalformedMessage

from .limits import Diversity, DiversityCount, RateLimitedLog
from .records import DHT_KEY_BYTES, PeerRecord, decode_valid
from .storage import RecordStorage
from .tokens import AMPLIFICATION, COOKIE_BYTES, TOKEN_BYTES, TokenIssuer

log = logging.getLogger(__name__)

MAX_DATAGRAM = 8192
HEADER_BYTES = 21
MAX_NODES_IN_REPLY = 40
MAX_COOKIES = 4096
VERIFIED_CACHE_SIZE = 4096
RTT_MEMORY = 5.0
MIN_RTT_WINDOW = 120.0
STALE_STALL = 0.05
STALL_FLOOR = 0.01
DEAD_MEMORY = 60.0
DEAD_CACHE_SIZE = 1024
SERVED_RPCS = frozenset({"ping", "find_node", "lookup", "announce"})

LookupReply = tuple[list[PeerRecord], list[Node], bytes]


def valid_id(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == DHT_KEY_BYTES


class DHTRoutingTable(RoutingTable):
    """kademlia's table, but ``find_neighbors`` ranks *every* contact by distance: kademlia's
    ``TableTraverser`` stops as soon as one side of the bucket list is exhausted, so it can
    return fewer than k contacts while more are known; and a bucket (with its replacement list)
    holds at most :class:`~.limits.Diversity` ``per_ip`` contacts of one host and ``per_subnet``
    of one network, so one machine cannot fill the buckets near a key (``refused_contacts``
    counts those turned away)."""

    def __init__(self, protocol: Any, ksize: int, node: Node, diversity: Diversity | None = None) -> None:
        super().__init__(protocol, ksize, node)
        self.diversity = diversity if diversity is not None else Diversity()
        self.refused_contacts = 0

    def add_contact(self, node: Node) -> None:
        bucket = self.buckets[self.get_bucket_for(node)]
        if node.id not in bucket.nodes and node.id not in bucket.replacement_nodes:
            count = DiversityCount(self.diversity)
            for other in (*bucket.nodes.values(), *bucket.replacement_nodes.values()):
                count.add(other.ip, other.port)
            if not count.fits(node.ip, node.port):
                self.refused_contacts += 1
                return
        super().add_contact(node)

    def find_neighbors(self, node: Node, k: int | None = None, exclude: Node | None = None) -> list[Node]:
        k = k or self.ksize
        contacts = [
            n for b in self.buckets for n in b.get_nodes()
            if n.id != node.id and (exclude is None or not n.same_home_as(exclude))
        ]
        return heapq.nsmallest(k, contacts, key=node.distance_to)


class DHTProtocol(KademliaProtocol):
    def __init__(
        self,
        source_node: Node,
        storage: RecordStorage,
        ksize: int,
        *,
        rpc_timeout: float = 1.0,
        clock: Callable[[], float] = time.time,
        token_rotation: float = 300.0,
        diversity: Diversity | None = None,
    ) -> None:
        super().__init__(source_node, storage, ksize)
        self.diversity = diversity if diversity is not None else Diversity()
        self.router = DHTRoutingTable(self, ksize, source_node, self.diversity)
        self.storage: RecordStorage = storage
        self._wait_timeout = rpc_timeout
        self.clock = clock
        self.tokens = TokenIssuer(token_rotation)
        self._cookies: dict[tuple[str, int], bytes] = {}
        self._reply_budget = MAX_DATAGRAM
        self.refused_announces = 0
        self.dropped_datagrams = 0
        self.unverified_replies = 0
        self._log_bad = RateLimitedLog(log)
        self.background: set[asyncio.Task[Any]] = set()
        self.srtt: float | None = None
        self.rttvar = 0.0
        self._rtt_at = 0.0
        self.min_rtt: float | None = None
        self._min_rtt_at = 0.0
        self._dead: dict[bytes, float] = {}
        self._verified_cache: dict[bytes, PeerRecord] = {}

    def observe_rtt(self, rtt: float, now: float | None = None) -> None:
        """Smoothed round-trip time and its variation of answered calls (RFC 6298's SRTT and
        RTTVAR, gains 1/8 and 1/4). After :data:`RTT_MEMORY` seconds without a sample the
        estimate restarts from the next one: RTTs seen long ago (say while the network was
        busy joining) say little about now. Also kept: the smallest RTT of the last
        :data:`MIN_RTT_WINDOW` seconds (a windowed minimum, which load does not inflate)."""
        now = time.monotonic() if now is None else now
        if self.srtt is None or now - self._rtt_at > RTT_MEMORY:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self._rtt_at = now
        if self.min_rtt is None or rtt <= self.min_rtt or now - self._min_rtt_at > MIN_RTT_WINDOW:
            self.min_rtt, self._min_rtt_at = rtt, now

    def stall_estimate(self, ceiling: float, now: float | None = None) -> float:
        """How long before an unanswered query is presumed slow: SRTT + 4 RTTVAR (TCP's RTO) of
        recent samples, in [:data:`STALL_FLOOR`, ``ceiling``]. After :data:`RTT_MEMORY` idle
        seconds it restarts as RFC 6298 starts from one sample R (3 R), with R the windowed
        minimum RTT, and at most :data:`STALE_STALL` (a minimum taken while joining a busy
        network can be high): a stale estimate made an idle node's first queries wait up to
        ``ceiling`` on dead contacts. Stalling only widens a lookup (late answers are still
        used), so erring low costs queries, not answers. No sample ever: ``ceiling``."""
        if self.srtt is None:
            return ceiling
        now = time.monotonic() if now is None else now
        if now - self._rtt_at > RTT_MEMORY and self.min_rtt is not None:
            return min(ceiling, STALE_STALL, max(STALL_FLOOR, 3 * self.min_rtt))
        return min(ceiling, max(STALL_FLOOR, self.srtt + 4 * self.rttvar))

    # -- contacts that did not answer -----------------------------------------------------

    def mark_dead(self, node_id: bytes, now: float | None = None) -> None:
        """Remember that ``node_id`` just timed out, for :data:`DEAD_MEMORY` seconds."""
        now = time.monotonic() if now is None else now
        self._dead.pop(node_id, None)
        self._dead[node_id] = now + DEAD_MEMORY
        while len(self._dead) > DEAD_CACHE_SIZE:
            del self._dead[next(iter(self._dead))]

    def is_dead(self, node_id: bytes, now: float | None = None) -> bool:
        """Whether ``node_id`` timed out recently and has not been heard from since."""
        expiry = self._dead.get(node_id)
        if expiry is None:
            return False
        if (time.monotonic() if now is None else now) >= expiry:
            del self._dead[node_id]
            return False
        return True

    def heard_from(self, node_id: bytes) -> None:
        self._dead.pop(node_id, None)

    def adopt(self, task: asyncio.Task[Any]) -> None:
        """Keep a reference to a task left to finish on its own; :meth:`close` cancels it."""
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def close(self) -> None:
        await cancel_all(list(self.background))

    # -- tokens and cookies ---------------------------------------------------------------

    def make_token(self, address: tuple[str, int], key: bytes) -> bytes:
        return self.tokens.token(address, key)

    def check_token(self, address: tuple[str, int], key: bytes, token: object) -> bool:
        return self.tokens.check_token(address, key, token)

    def _remember_cookie(self, address: tuple[str, int], cookie: bytes) -> None:
        self._cookies.pop(address, None)
        self._cookies[address] = cookie
        while len(self._cookies) > MAX_COOKIES:
            del self._cookies[next(iter(self._cookies))]

    # -- receive path ---------------------------------------------------------------------

    def _drop(self, why: str, addr: tuple[str, int]) -> None:
        self.dropped_datagrams += 1
        self._log_bad("dropped a datagram from %s: %s", addr, why)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        if not HEADER_BYTES < len(data) <= MAX_DATAGRAM:
            self._drop(f"{len(data)} bytes", addr)
            return
        kind, msg_id = data[:1], data[1:HEADER_BYTES]
        try:
            payload = msgpack.unpackb(data[HEADER_BYTES:])
        except Exception:
            self._drop("not msgpack", addr)
            return
        if kind == b"\x00":
            self._on_request(msg_id, payload, addr, len(data))
        elif kind == b"\x01":
            self._accept_response(msg_id, payload, addr)
        else:
            self._drop("unknown datagram type", addr)

    def _on_request(self, msg_id: bytes, payload: Any, addr: tuple[str, int], size: int) -> None:
        if not (isinstance(payload, list) and len(payload) == 2 and isinstance(payload[1], list)):
            self._drop("not a [name, args] request", addr)
            return
        name, args = payload
        if not isinstance(name, str) or name not in SERVED_RPCS or self.transport is None:
            self._drop(f"unknown rpc {str(name)[:40]!r}", addr)
            return
        self._reply_budget = AMPLIFICATION * size
        try:
            response = getattr(self, f"rpc_{name}")(addr, *args)
        except (TypeError, ValueError) as e:
            self._drop(f"bad {name} request: {e}", addr)
            return
        finally:
            self._reply_budget = MAX_DATAGRAM
        if response is None:
            self._drop(f"bad {name} arguments", addr)
            return
        self.transport.sendto(b"\x01" + msg_id + msgpack.packb(response), addr)

    def _accept_response(self, msg_id: bytes, data: Any, address: tuple[str, int]) -> None:
        entry = self._outstanding.pop(msg_id, None)
        if entry is None:
            return
        future, timeout = entry
        timeout.cancel()
        if not future.done():
            future.set_result((True, data))

    def _timeout(self, msg_id: bytes) -> None:
        entry = self._outstanding.pop(msg_id, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result((False, None))

    def handle_call_response(self, result: tuple[bool, Any], node: Node) -> tuple[bool, Any]:
        if not result[0]:
            log.debug("no response from %s, removing it from the routing table", node)
            self.router.remove_contact(node)
            self.mark_dead(node.id)
        else:
            self.heard_from(node.id)
            self.welcome_if_new(node)
        return result

    def welcome_if_new(self, node: Node) -> None:
        if node.id == self.source_node.id or not valid_id(node.id):
            return
        if self.router.is_new_node(node):
            self.router.add_contact(node)

    # -- inbound RPCs ---------------------------------------------------------------------

    def rpc_ping(self, sender: tuple[str, int], nodeid: object) -> bytes | None:
        if not valid_id(nodeid):
            return None
        self.heard_from(nodeid)
        self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
        return self.source_node.id

    def rpc_find_node(
        self, sender: tuple[str, int], nodeid: object, key: object, cookie: object = None
    ) -> list | None:
        if not (valid_id(nodeid) and valid_id(key)):
            return None
        source = Node(nodeid, sender[0], sender[1])
        self.heard_from(nodeid)
        self.welcome_if_new(source)
        nodes = self._neighbors(key, source)
        if not self.tokens.check_cookie(sender, cookie):
            self.unverified_replies += 1
            while nodes and HEADER_BYTES + len(msgpack.packb(nodes)) > self._reply_budget:
                nodes.pop()
        return nodes

    def rpc_lookup(
        self, sender: tuple[str, int], nodeid: object, key: object, cookie: object = None
    ) -> list | None:
        if not (valid_id(nodeid) and valid_id(key)):
            return None
        fresh = self.tokens.cookie(sender)
        source = Node(nodeid, sender[0], sender[1])
        if not self.tokens.check_cookie(sender, cookie):
            # Not yet shown to receive at this address: a reply no bigger than the request.
            self.unverified_replies += 1
            return [[], [], b"", fresh]
        self.heard_from(nodeid)
        self.welcome_if_new(source)
        nodes = self._neighbors(key, source)
        token = self.make_token(sender, key)
        encoded = [r.encode() for r in self.storage.records(key)]
        random.shuffle(encoded)
        budget = MAX_DATAGRAM - HEADER_BYTES - len(msgpack.packb([[], nodes, token, fresh])) - 8
        records: list[bytes] = []
        for blob in encoded:
            cost = len(msgpack.packb(blob))
            if cost > budget:
                break
            records.append(blob)
            budget -= cost
        return [records, nodes, token, fresh]

    def rpc_announce(
        self, sender: tuple[str, int], nodeid: object, record: object, token: object
    ) -> bool | None:
        if not valid_id(nodeid):
            return None
        parsed = decode_valid(record, self.clock())
        if parsed is None or not self.check_token(sender, parsed.key, token):
            self.refused_announces += 1
            return False
        if not self.storage.add(parsed.key, parsed, self.diversity.source(sender)):
            self.refused_announces += 1
            return False
        self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
        return True

    def _neighbors(self, key: bytes, exclude: Node | None) -> list[tuple]:
        # More than k, so a lookup can walk past the dead among the k closest without waiting;
        # never contacts that just timed out here (a replacement promoted into a bucket may be).
        found = self.router.find_neighbors(Node(key), k=self.router.ksize * 3 // 2 + 8, exclude=exclude)
        live = [n for n in found if not self.is_dead(n.id)][: self.router.ksize * 3 // 2]
        return [tuple(n) for n in live[:MAX_NODES_IN_REPLY]]

    # -- outbound RPCs --------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        """``self.NAME(address, *args)`` sends RPC ``NAME``, as rpcudp's, packed by the C msgpack."""
        if name.startswith("_") or name.startswith("rpc_"):
            raise AttributeError(name)

        def call(address: tuple[str, int], *args: Any) -> asyncio.Future[tuple[bool, Any]]:
            data = msgpack.packb([name, list(args)])
            if len(data) > MAX_DATAGRAM - HEADER_BYTES:
                raise MalformedMessage("an RPC's name and arguments must fit in one datagram")
            msg_id = os.urandom(HEADER_BYTES - 1)
            loop = asyncio.get_running_loop()
            future: asyncio.Future[tuple[bool, Any]] = loop.create_future()
            timeout = loop.call_later(self._wait_timeout, self._timeout, msg_id)
            self._outstanding[msg_id] = (future, timeout)
            assert self.transport is not None
            self.transport.sendto(b"\x00" + msg_id + data, address)
            return future

        return call

    async def call_lookup(self, node: Node, key: bytes) -> tuple[bool, LookupReply | None]:
        """``lookup`` at ``node``, showing it our address first if it has not seen it yet (it
        then answers only with a cookie, and the call is made again with it)."""
        address = (node.ip, node.port)
        for _attempt in range(2):
            cookie = self._cookies.get(address)
            args = (self.source_node.id, key) if cookie is None else (self.source_node.id, key, cookie)
            started = time.monotonic()
            result = await self.lookup(address, *args)
            ok, reply = self.handle_call_response(result, node)
            if not ok:
                return False, None
            self.observe_rtt(time.monotonic() - started)
            parsed = self._parse_lookup_reply(reply)
            if parsed is None:
                self.router.remove_contact(node)
                return False, None
            records, nodes, token, fresh = parsed
            if fresh:
                self._remember_cookie(address, fresh)
            if token or not fresh or fresh == cookie:
                break
        return True, (records, nodes, token)

    async def call_announce(self, node: Node, record: bytes, token: bytes) -> bool:
        try:
            call = self.announce((node.ip, node.port), self.source_node.id, record, token)
        except MalformedMessage:
            return False
        ok, reply = self.handle_call_response(await call, node)
        return bool(ok and reply is True)

    def _verified(self, blob: object, now: float) -> PeerRecord | None:
        """decode_valid, remembering records already verified (the k closest nodes return the
        same records, so each signature is checked once, not k times)."""
        if not isinstance(blob, bytes):
            return None
        record = self._verified_cache.get(blob)
        if record is None:
            record = decode_valid(blob, now)
            if record is None:
                return None
            if len(self._verified_cache) >= VERIFIED_CACHE_SIZE:
                self._verified_cache.clear()
            self._verified_cache[blob] = record
        return record if record.expires > now else None

    def _parse_lookup_reply(self, reply: Any) -> tuple[list[PeerRecord], list[Node], bytes, bytes] | None:
        if not (isinstance(reply, list | tuple) and len(reply) == 4):
            return None
        raw_records, raw_nodes, token, cookie = reply
        if not (isinstance(raw_records, list) and isinstance(raw_nodes, list)):
            return None
        if not (isinstance(token, bytes) and len(token) in (0, TOKEN_BYTES)):
            return None
        if not (isinstance(cookie, bytes) and len(cookie) in (0, COOKIE_BYTES)):
            return None
        now = self.clock()
        records = [r for r in (self._verified(b, now) for b in raw_records) if r is not None]
        nodes = [n for n in (_parse_node(x) for x in raw_nodes[:MAX_NODES_IN_REPLY]) if n is not None]
        return records, [n for n in nodes if n.id != self.source_node.id], token, cookie


def _parse_node(item: object) -> Node | None:
    if not (isinstance(item, list | tuple) and len(item) == 3):
        return None
    node_id, ip, port = item
    if not (valid_id(node_id) and isinstance(ip, str) and type(port) is int and 0 < port < 65536):
        return None
    return _contact(node_id, ip, port)


@lru_cache(maxsize=8192)
def _contact(node_id: bytes, ip: str, port: int) -> Node | None:
    """One Node per (id, ip, port) while cached (most replies of a lookup repeat the k closest)."""
    if not _node_ip_ok(ip):
        return None  # nowhere a node can be (and no reflecting our queries at broadcast ranges)
    return Node(node_id, ip, port)


@lru_cache(maxsize=4096)
def _node_ip_ok(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return not (addr.is_unspecified or addr.is_multicast or addr.is_reserved or str(addr) != ip)


async def cancel_all(tasks: set[asyncio.Task[Any]] | list[asyncio.Task[Any]]) -> None:
    """Cancel tasks and wait for them to finish (so none is left pending)."""
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
