"""2-byte big-endian length-prefixed frames, sans-IO.

The one definition of the frame format: :func:`encode_frame` (or :func:`write_header` into a
buffer of many frames) and :func:`frame_length` (the transport reads a header, then exactly that
many bytes) and :class:`FrameDecoder` (bytes in as they arrive, frames out). An empty frame is a
protocol error.
"""

from __future__ import annotations

import struct

from .errors import RemoteProtocolError

MAX_FRAME = 65535
HEADER_BYTES = 2
_LEN = struct.Struct(">H")


def encode_frame(payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME:
        raise ValueError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME}")
    return _LEN.pack(len(payload)) + payload


def write_header(buf: bytearray, pos: int, n: int) -> None:
    """Write the header of an ``n``-byte frame at ``buf[pos:pos + HEADER_BYTES]`` (a sender that
    builds many frames in one buffer)."""
    if not 0 < n <= MAX_FRAME:
        raise ValueError(f"frame of {n} bytes is not between 1 and {MAX_FRAME}")
    _LEN.pack_into(buf, pos, n)


def frame_length(header: bytes) -> int:
    """The payload length a ``HEADER_BYTES`` header announces."""
    (n,) = _LEN.unpack(header)
    if n == 0:
        raise RemoteProtocolError("empty frame")
    return int(n)


class FrameDecoder:
    """Feed bytes as they arrive; get back the complete frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames = []
        while len(self._buf) >= 2:
            n = frame_length(bytes(self._buf[:HEADER_BYTES]))
            if len(self._buf) < 2 + n:
                break
            frames.append(bytes(self._buf[2:2 + n]))
            del self._buf[:2 + n]
        return frames
