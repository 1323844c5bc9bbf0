"""2-byte big-endian length-prefixed frames, sans-IO."""

from __future__ import annotations

import struct

from .errors import RemoteProtocolError

MAX_FRAME = 65535
_LEN = struct.Struct(">H")


def encode_frame(payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME:
        raise ValueError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME}")
    return _LEN.pack(len(payload)) + payload


class FrameDecoder:
    """Feed bytes as they arrive; get back the complete frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames = []
        while len(self._buf) >= 2:
            (n,) = _LEN.unpack_from(self._buf)
            if n == 0:
                raise RemoteProtocolError("empty frame")
            if len(self._buf) < 2 + n:
                break
            frames.append(bytes(self._buf[2:2 + n]))
            del self._buf[:2 + n]
        return frames
