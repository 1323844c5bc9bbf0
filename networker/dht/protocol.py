"""The DHT's wire protocol: kademlia's ``KademliaProtocol`` with topic announce/lookup RPCs.

Theory of operation
-------------------
Transport is kademlia's (rpcudp): one UDP datagram per request and per reply, ``type byte (0
request, 1 reply) | 20-byte message id | u-msgpack [name, args]``. This subclass changes what
is served and hardens the receive path; it keeps kademlia's routing table and node model.

Inbound RPCs served (anything else is ignored, including kademlia's ``store``/``find_value``
which hold one value per key and cannot carry many signed records):

``ping(nodeid) -> nodeid``
``find_node(nodeid, key) -> [[id, ip, port], ...]``
``lookup(nodeid, key) -> [records, nodes, token]``
    ``records``: the valid records held under ``key`` (encoded, shuffled, truncated so the reply
    fits in :data:`MAX_DATAGRAM`); ``nodes``: the 1.5 k closest contacts known, so an iterative lookup
    can go on; ``token``: an announce token for the *sender's real address* (BEP 5 style):
    ``keyed_blake3(secret, "ip:port")``, where ``secret`` rotates every ``token_rotation`` seconds
    and the previous one is still accepted.
``announce(nodeid, record, token) -> bool``
    stored only if ``token`` is valid for the address the datagram came from and the record
    verifies. So a forged STORE from a socket that never looked the key up is refused, and a
    spoofed source address never gets to see the token it would need.

Receive-path hardening over rpcudp: malformed datagrams, wrong argument shapes and unknown
RPCs are dropped without raising; requests are answered synchronously (no orphan tasks);
replies for calls that were abandoned (a lookup finished without them) are dropped. The per-RPC
timeout is ``rpc_timeout`` (rpcudp's ``_wait_timeout``). A timed-out contact is removed from the
routing table (kademlia's ``handle_call_response``) and remembered as *recently dead* for
:data:`DEAD_MEMORY` seconds or until it is heard from again: lookups skip it when others hand it
out, and this node never hands it out. The stall estimate that lookups use is SRTT + 4 RTTVAR of
answered calls, restarted after :data:`RTT_MEMORY` idle seconds (a seeker's estimate from a busy
past would otherwise make it wait on dead contacts far longer than needed); ``find_neighbors``
ranks all contacts (:class:`DHTRoutingTable`, kademlia's traversal can stop early); this node
never adds itself
(``welcome_if_new``, which also no longer re-hashes keys: records are not pushed to new nodes,
their owners re-announce them).
"""

from __future__ import annotations

import asyncio
import heapq
import hmac
import ipaddress
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any

import blake3
import umsgpack
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable
from rpcudp.exceptions import MalformedMessage

from .records import DHT_KEY_BYTES, PeerRecord, decode_valid
from .storage import RecordStorage

log = logging.getLogger(__name__)

MAX_DATAGRAM = 8192
HEADER_BYTES = 21
TOKEN_BYTES = 20
SECRET_BYTES = 32
MAX_NODES_IN_REPLY = 40
VERIFIED_CACHE_SIZE = 4096
RTT_MEMORY = 5.0
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
    return fewer than k contacts while more are known."""

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
    ) -> None:
        super().__init__(source_node, storage, ksize)
        self.router = DHTRoutingTable(self, ksize, source_node)
        self.storage: RecordStorage = storage
        self._wait_timeout = rpc_timeout
        self.clock = clock
        self.token_rotation = token_rotation
        self._secrets = [os.urandom(SECRET_BYTES), os.urandom(SECRET_BYTES)]
        self._rotated_at = time.monotonic()
        self.refused_announces = 0
        self.background: set[asyncio.Task[Any]] = set()
        self.srtt: float | None = None
        self.rttvar = 0.0
        self._rtt_at = 0.0
        self._dead: dict[bytes, float] = {}
        self._verified_cache: dict[bytes, PeerRecord] = {}

    def observe_rtt(self, rtt: float, now: float | None = None) -> None:
        """Smoothed round-trip time and its variation of answered calls (RFC 6298's SRTT and
        RTTVAR, gains 1/8 and 1/4). After :data:`RTT_MEMORY` seconds without a sample the
        estimate restarts from the next one: RTTs seen long ago (say while the network was
        busy joining) say little about now."""
        now = time.monotonic() if now is None else now
        if self.srtt is None or now - self._rtt_at > RTT_MEMORY:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self._rtt_at = now

    def stall_estimate(self, ceiling: float, now: float | None = None) -> float:
        """How long before an unanswered query is presumed slow: SRTT + 4 RTTVAR (TCP's RTO)
        from recent samples, at least :data:`STALL_FLOOR`, at most ``ceiling``. With no recent
        sample, the last estimate (a stale, usually pessimistic one) still applies until the
        first answer."""
        if self.srtt is None:
            return ceiling
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

    # -- tokens ---------------------------------------------------------------------------

    def _current_secrets(self) -> list[bytes]:
        if time.monotonic() - self._rotated_at >= self.token_rotation:
            self._secrets = [os.urandom(SECRET_BYTES), self._secrets[0]]
            self._rotated_at = time.monotonic()
        return self._secrets

    def make_token(self, address: tuple[str, int]) -> bytes:
        return _token(self._current_secrets()[0], address)

    def check_token(self, address: tuple[str, int], token: object) -> bool:
        if not isinstance(token, bytes) or len(token) != TOKEN_BYTES:
            return False
        return any(hmac.compare_digest(_token(s, address), token) for s in self._current_secrets())

    # -- receive path ---------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        if not HEADER_BYTES < len(data) <= MAX_DATAGRAM:
            return
        kind, msg_id = data[:1], data[1:HEADER_BYTES]
        try:
            payload = umsgpack.unpackb(data[HEADER_BYTES:])
        except Exception:
            log.debug("undecodable datagram from %s", addr)
            return
        if kind == b"\x00":
            self._on_request(msg_id, payload, addr)
        elif kind == b"\x01":
            self._accept_response(msg_id, payload, addr)

    def _on_request(self, msg_id: bytes, payload: Any, addr: tuple[str, int]) -> None:
        if not (isinstance(payload, list) and len(payload) == 2 and isinstance(payload[1], list)):
            return
        name, args = payload
        if name not in SERVED_RPCS or self.transport is None:
            return
        try:
            response = getattr(self, f"rpc_{name}")(addr, *args)
        except (TypeError, ValueError) as e:
            log.debug("bad %s request from %s: %s", name, addr, e)
            return
        if response is None:
            return
        self.transport.sendto(b"\x01" + msg_id + umsgpack.packb(response), addr)

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

    def rpc_find_node(self, sender: tuple[str, int], nodeid: object, key: object) -> list | None:
        if not (valid_id(nodeid) and valid_id(key)):
            return None
        source = Node(nodeid, sender[0], sender[1])
        self.heard_from(nodeid)
        self.welcome_if_new(source)
        return self._neighbors(key, source)

    def rpc_lookup(self, sender: tuple[str, int], nodeid: object, key: object) -> list | None:
        if not (valid_id(nodeid) and valid_id(key)):
            return None
        source = Node(nodeid, sender[0], sender[1])
        self.heard_from(nodeid)
        self.welcome_if_new(source)
        nodes = self._neighbors(key, source)
        token = self.make_token(sender)
        encoded = [r.encode() for r in self.storage.records(key)]
        random.shuffle(encoded)
        budget = MAX_DATAGRAM - HEADER_BYTES - len(umsgpack.packb([[], nodes, token])) - 8
        records: list[bytes] = []
        for blob in encoded:
            cost = len(umsgpack.packb(blob))
            if cost > budget:
                break
            records.append(blob)
            budget -= cost
        return [records, nodes, token]

    def rpc_announce(
        self, sender: tuple[str, int], nodeid: object, record: object, token: object
    ) -> bool | None:
        if not valid_id(nodeid):
            return None
        if not self.check_token(sender, token):
            self.refused_announces += 1
            return False
        parsed = decode_valid(record, self.clock())
        if parsed is None or not self.storage.add(parsed.key, parsed, sender[0]):
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

    async def call_lookup(self, node: Node, key: bytes) -> tuple[bool, LookupReply | None]:
        started = time.monotonic()
        result = await self.lookup((node.ip, node.port), self.source_node.id, key)
        ok, reply = self.handle_call_response(result, node)
        if not ok:
            return False, None
        self.observe_rtt(time.monotonic() - started)
        parsed = self._parse_lookup_reply(reply)
        if parsed is None:
            self.router.remove_contact(node)
            return False, None
        return True, parsed

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

    def _parse_lookup_reply(self, reply: Any) -> LookupReply | None:
        if not (isinstance(reply, list | tuple) and len(reply) == 3):
            return None
        raw_records, raw_nodes, token = reply
        if not (isinstance(raw_records, list) and isinstance(raw_nodes, list)):
            return None
        if not isinstance(token, bytes):
            return None
        now = self.clock()
        records = [r for r in (self._verified(b, now) for b in raw_records) if r is not None]
        nodes = [n for n in (_parse_node(x) for x in raw_nodes[:MAX_NODES_IN_REPLY]) if n is not None]
        return records, [n for n in nodes if n.id != self.source_node.id], token


def _token(secret: bytes, address: tuple[str, int]) -> bytes:
    text = f"{address[0]}:{address[1]}".encode()
    return blake3.blake3(text, key=secret).digest(length=TOKEN_BYTES)


def _parse_node(item: object) -> Node | None:
    if not (isinstance(item, list | tuple) and len(item) == 3):
        return None
    node_id, ip, port = item
    if not (valid_id(node_id) and isinstance(ip, str) and type(port) is int and 0 < port < 65536):
        return None
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return None
    return Node(node_id, ip, port)


async def cancel_all(tasks: set[asyncio.Task[Any]] | list[asyncio.Task[Any]]) -> None:
    """Cancel tasks and wait for them to finish (so none is left pending)."""
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
