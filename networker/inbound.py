"""The receiving side of an established connection: bytes read straight into one buffer,
frames cut out of it in place.

Theory of operation
-------------------
Until its handshake completes a connection is an asyncio stream pair (``StreamReader``,
``StreamWriter``). A ``StreamReader`` costs three copies and two awaits a frame: the transport
reads into a new ``bytes``, ``feed_data`` appends that to the reader's buffer, and
``readexactly`` copies the header and then the body out of it again. At 64 KiB frames that
was most of a receiving event loop's time outside Noise (see ``bench/README.md``).

:class:`Inbound` takes the transport over once the session is established
(``transport.set_protocol``): it is an ``asyncio.BufferedProtocol``, so the transport reads
with ``recv_into`` into :class:`Inbound`'s fixed buffer, and :meth:`Inbound.frame` hands out
the next complete frame as a ``memoryview`` of that buffer, valid until the next call, which
Noise decrypts from directly. Frames are cut only when asked for: bytes after the last frame
the caller took stay raw, so :meth:`Inbound.give_back` can return the transport to its stream
pair with them (a relay circuit: after the last control message the bytes are another
session's).

Back-pressure: reading pauses while ``HIGH`` bytes or more wait to be taken (the remote then
meets TCP's window, as with a ``StreamReader``, which paused at 128 KiB) and resumes when the
caller has taken them down to ``LOW``. The buffer starts at ``INITIAL`` bytes and doubles, up
to ``CAPACITY`` (room for ``HIGH`` and a whole frame), when a read fills all it was offered
(more is waiting: a connection carrying Data messages) or when the unread bytes and a read of
``MIN_READ`` would not fit; a connection of small messages keeps a small buffer. The unread
bytes move to the front only when the tail is short, and the next read starts at the front
whenever every byte was taken.

Writing is left to the ``StreamWriter``; only its flow control moves here (``pause_writing``
and ``resume_writing`` now reach this protocol, so :meth:`Inbound.drain` waits in its place).
The end of the connection is passed on to the stream pair's own protocol too, so that what
waits on it (``StreamWriter.wait_closed``) still ends.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from .errors import RemoteProtocolError
from .framing import HEADER_BYTES, MAX_FRAME

HIGH = 512 * 1024  # unread bytes at which reading pauses
LOW = 128 * 1024  # and resumes: far enough below that a pause and its resume (an epoll_ctl each)
# come once in several frames, not once a frame as at 128 and 64 KiB
INITIAL = 16 * 1024  # a connection's first buffer: most never carry more than small messages
CAPACITY = HIGH + HEADER_BYTES + MAX_FRAME + 64 * 1024  # the most it doubles to
MIN_READ = 4 * 1024  # free bytes a read is given at least
_LEN = struct.Struct(">H")


class Inbound(asyncio.BufferedProtocol):
    """The protocol of an established connection's transport (module docstring)."""

    def __init__(self, transport: asyncio.Transport, streams: asyncio.StreamReaderProtocol,
                 reader: asyncio.StreamReader) -> None:
        self._transport = transport
        self._streams = streams
        self._reader = reader
        self._buf = bytearray(INITIAL)
        self._view = memoryview(self._buf)
        self._start = 0  # first byte not yet taken
        self._end = 0  # end of the bytes read
        self._paused = False  # reading
        self._offered = 0  # the bytes the last get_buffer offered
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._waiter: asyncio.Future[None] | None = None
        # asyncio has no public way to take what a StreamReader holds without awaiting: its
        # attributes (the same from 3.4 to 3.13) are read here and in give_back, nowhere else.
        raw: Any = reader
        self._write_paused = bool(getattr(streams, "_paused", False))  # the stream pair's write pause, carried over
        if self._write_paused:
            streams.resume_writing()  # and cleared there: give_back sets it again if still paused
        self._eof: bool = raw._eof  # no more bytes will come
        self._lost: ConnectionResetError | None = None  # the connection ended
        if reader.exception() is not None:
            self._lost = ConnectionResetError(f"connection lost: {reader.exception()}")
        self._loop = asyncio.get_running_loop()
        self._accept(bytes(raw._buffer))  # read with the handshake's last frame, not yet taken
        raw._buffer.clear()
        if raw._paused:  # the reader had paused the transport; this protocol reads now
            raw._paused = False
            transport.resume_reading()
        transport.set_protocol(self)
        self._pause_if_full()

    # -- what the caller uses --------------------------------------------------------------------

    async def frame(self) -> memoryview:
        """The next complete frame's payload: a view of the buffer, valid until the caller next
        awaits (the buffer's bytes move when the transport reads again). Raises
        ``ConnectionResetError`` once the connection ended before another frame completed."""
        while True:
            got = self._next()
            if got is not None:
                return got
            if self._lost is not None:
                raise self._lost
            if self._eof:
                raise ConnectionResetError("connection closed by peer")
            if self._waiter is not None:
                raise RuntimeError("frame() called while another task is waiting for a frame")
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _next(self) -> memoryview | None:
        start, avail = self._start, self._end - self._start
        if avail < HEADER_BYTES:
            return None
        (n,) = _LEN.unpack_from(self._buf, start)
        if n == 0:
            raise RemoteProtocolError("empty frame")
        if avail < HEADER_BYTES + n:
            return None
        self._start = start + HEADER_BYTES + n
        if self._start == self._end:  # the next read starts at the front (no bytes move)
            self._start = self._end = 0
        if self._paused and self._end - self._start <= LOW:
            self._paused = False
            self._transport.resume_reading()
        return self._view[start + HEADER_BYTES:start + HEADER_BYTES + n]

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        if self._lost is not None:
            raise self._lost
        if self._transport.is_closing():
            raise ConnectionResetError("connection closed")
        if not self._write_paused:
            return
        fut = self._loop.create_future()
        self._drain_waiters.append(fut)
        try:
            await fut
        finally:
            self._drain_waiters.remove(fut)

    def give_back(self) -> None:
        """Return the transport to the stream pair, the bytes not taken as frames in the
        reader's buffer (a relay circuit's first bytes of another session). A task still waiting
        here for a frame or a drain gets ``ConnectionResetError``: nothing reaches this protocol
        any more."""
        handed = ConnectionResetError("the connection was handed back to its stream pair")
        self._lost = self._lost or handed
        self._wake()
        for fut in self._drain_waiters:
            if not fut.done():
                fut.set_exception(handed)
        rest = bytes(self._view[self._start:self._end])
        self._start = self._end = 0
        if self._write_paused:
            self._streams.pause_writing()  # so that its resume_writing finds it paused
        self._transport.set_protocol(self._streams)
        # The end of the connection (if any) already reached the reader: the bytes go in front
        # of it. ``feed_data`` would refuse them after an EOF.
        raw: Any = self._reader
        raw._buffer.extend(rest)
        if self._paused:
            self._paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()

    # -- the transport's side --------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self._buf) - self._end < MIN_READ:
            self._make_room(MIN_READ)
        self._offered = len(self._buf) - self._end
        return self._view[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        if nbytes == self._offered and len(self._buf) < CAPACITY:
            self._make_room(len(self._buf))  # a read that filled all it was given: more waits, double
        self._pause_if_full()
        self._wake()

    def data_received(self, data: bytes) -> None:  # a transport without buffered reading
        self._accept(data)
        self._pause_if_full()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return bool(self._streams.eof_received())  # the stream pair's answer: keep writing (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._lost = ConnectionResetError(f"connection lost: {exc}" if exc is not None else "connection closed")
        self._wake()
        for fut in self._drain_waiters:
            if not fut.done():
                fut.set_exception(self._lost)
        self._streams.connection_lost(exc)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for fut in self._drain_waiters:
            if not fut.done():
                fut.set_result(None)

    # -- inside ----------------------------------------------------------------------------------

    def _accept(self, data: bytes) -> None:
        """Copy ``data`` in after the unread bytes (the handshake's leftover, or a transport that
        hands out ``bytes``)."""
        if len(self._buf) - self._end < len(data):
            self._make_room(len(data))
        self._buf[self._end:self._end + len(data)] = data
        self._end += len(data)

    def _make_room(self, n: int) -> None:
        """At least ``n`` free bytes after the unread ones: the unread bytes moved to the front,
        in a larger buffer if this one cannot hold them and ``n`` more."""
        unread = self._end - self._start
        if len(self._buf) < unread + n:
            grown = bytearray(max(min(2 * len(self._buf), CAPACITY), unread + n))
            grown[:unread] = self._view[self._start:self._end]
            self._buf, self._view = grown, memoryview(grown)  # views handed out keep the old one
        elif unread:
            self._view[:unread] = self._view[self._start:self._end]  # memoryview copies as memmove: overlap is fine
        self._start, self._end = 0, unread

    def _pause_if_full(self) -> None:
        if not self._paused and self._end - self._start >= HIGH and not self._transport.is_closing():
            self._paused = True
            self._transport.pause_reading()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
