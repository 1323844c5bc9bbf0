"""Test helpers shared across packages: in-memory connections and bounded waiting."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from networker.errors import ConnectionClosedError


async def until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait until ``condition()`` is true, checking every few milliseconds; fail after
    ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


class MemoryConnection:
    """One end of an in-memory, already-authenticated connection (what a Noise
    SecureConnection offers to the layers above), with bounded buffering."""

    def __init__(self, inbox: asyncio.Queue, outbox: asyncio.Queue, handshake_hash: bytes,
                 is_initiator: bool, remote_peer_id: bytes) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self.handshake_hash = handshake_hash
        self.is_initiator = is_initiator
        self.remote_peer_id = remote_peer_id
        self.closed = False
        self.sent: list[bytes] = []
        self.tap: Callable[[bytes], bytes | None] | None = None  # rewrite or drop outgoing

    async def send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionClosedError("closed")
        if self.tap is not None:
            data = self.tap(data)
            if data is None:
                return
        self.sent.append(data)
        await self._outbox.put(data)

    async def recv(self) -> bytes:
        item = await self._inbox.get()
        if item is None:
            self.closed = True
            raise ConnectionClosedError("closed by peer")
        return item

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for q in (self._inbox, self._outbox):
            try:
                q.put_nowait(None)
            except asyncio.QueueFull:
                q.get_nowait()
                q.put_nowait(None)


def memory_pair(id_a: bytes, id_b: bytes, *, buffer: int = 64,
                handshake_hash: bytes | None = None) -> tuple[MemoryConnection, MemoryConnection]:
    """Two connected ends: ``a`` (the initiator, peer ``id_a``) and ``b``."""
    hh = handshake_hash or os.urandom(64)
    ab: asyncio.Queue = asyncio.Queue(buffer)
    ba: asyncio.Queue = asyncio.Queue(buffer)
    return (MemoryConnection(ba, ab, hh, True, id_b), MemoryConnection(ab, ba, hh, False, id_a))
