"""Known peers: addresses the user gave with ``cobox peers add``, kept and redialled.

Theory of operation
-------------------
``peers add ADDRESS`` connects once; when that works the peer becomes *known*: its address,
keyed with the peer's key as the handshake proved it (``tcp:HOST:PORT~noise:KEY``), is kept as a
record of the store (scope ``known-peers``, key: the peer id in hex), like Syncthing's static
device addresses. :class:`KnownPeers` dials every known peer that is not connected, at start and
after it leaves, with a capped exponential backoff per peer (:data:`BASE` doubling up to
:data:`CAP`), so a machine that was off comes back by itself; a connection made otherwise (the
DHT, the LAN) counts as connected. Only the key in the kept address is trusted: a dial that
reaches another key fails the handshake. ``peers remove PEER`` (the key, a hex id prefix or the
address) forgets the peer and closes its connection.

The schedule (:meth:`KnownPeers.due`) is pure: given the clock, which peers to dial now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from networker import Address, AddressError, NetworkError, backoff_delay, encode_key
from networker import parse_address as parse

from .errors import NotFoundError, UsageError

log = logging.getLogger(__name__)
SCOPE = "known-peers"
BASE = 5.0
CAP = 300.0
TICK = 2.0
MAX_KNOWN = 256


@dataclass
class Known:
    peer_id: bytes
    address: str
    failures: int = 0
    next_try: float = 0.0


def keyed(address: str, peer_id: bytes) -> str:
    """``address`` with ``peer_id`` as its key (a key it already names must be that one)."""
    alt = parse(address).alternatives[0]
    if alt.peer_key is not None and alt.peer_key != peer_id:
        raise UsageError("the peer answered with another key than the address names")
    return Address(alt.transport, host=alt.host, port=alt.port, path=alt.path, peer_key=peer_id).format()


class KnownPeers:
    def __init__(self, store: Any, node: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.node = node
        self.clock = clock
        self.known: dict[bytes, Known] = {}

    async def load(self) -> None:
        for key, value in (await self.store.records(SCOPE)).items():
            try:
                peer_id = bytes.fromhex(key)
                address = keyed(value.decode(), peer_id)
            except (ValueError, UnicodeDecodeError, AddressError, UsageError):
                log.warning("skipping a known peer record that does not parse")
                continue
            self.known[peer_id] = Known(peer_id, address)

    async def add(self, address: str, peer_id: bytes) -> None:
        if peer_id not in self.known and len(self.known) >= MAX_KNOWN:
            raise UsageError(f"at most {MAX_KNOWN} known peers; remove one first (`cobox peers remove PEER`)")
        address = keyed(address, peer_id)
        await self.store.put_record(SCOPE, peer_id.hex(), address.encode())
        self.known[peer_id] = Known(peer_id, address)

    def find(self, text: str) -> Known:
        text = text.strip()
        matches = [k for k in self.known.values()
                   if text in (k.address, encode_key(k.peer_id)) or k.address.startswith(text)
                   or (len(text) >= 4 and k.peer_id.hex().startswith(text.lower()))]
        if not matches:
            raise NotFoundError(f"no known peer {text!r} (`cobox peers` lists them)")
        if len(matches) > 1:
            raise UsageError(f"{text!r} names {len(matches)} known peers; give more of the key")
        return matches[0]

    async def remove(self, text: str) -> bytes:
        k = self.find(text)
        await self.store.delete_record(SCOPE, k.peer_id.hex())
        self.known.pop(k.peer_id, None)
        peer = self.node.peers.get(k.peer_id)
        if peer is not None:
            peer.close()
        return k.peer_id

    def due(self, connected: set[bytes], now: float) -> list[Known]:
        """The known peers to dial now: not connected and past their backoff."""
        out = []
        for k in self.known.values():
            if k.peer_id in connected:
                k.failures, k.next_try = 0, 0.0
            elif k.next_try <= now:
                out.append(k)
        return out

    def failed(self, k: Known, now: float) -> None:
        k.failures += 1
        k.next_try = now + backoff_delay(BASE, CAP, k.failures)

    def documents(self, connected: set[bytes]) -> list[dict[str, object]]:
        return [{"peer_id": k.peer_id.hex(), "peer_key": encode_key(k.peer_id), "address": k.address,
                 "connected": k.peer_id in connected, "failures": k.failures} for k in self.known.values()]

    async def run(self) -> None:
        """Redial known peers for as long as the daemon runs (a supervised task)."""
        while True:
            connected = set(self.node.peers)
            for k in self.due(connected, self.clock()):
                try:
                    await self.node.connect(k.address)
                except (NetworkError, OSError, TimeoutError) as e:
                    self.failed(k, self.clock())
                    if k.failures == 1:
                        log.info("known peer %s not reachable: %s", k.peer_id.hex()[:16], e)
            await asyncio.sleep(TICK)
