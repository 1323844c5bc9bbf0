"""Chunk entries padded to Padmé size classes: moved to :mod:`cobox.entries` (its "Chunk
entries" section); these names stay importable from here."""

from __future__ import annotations

from ..entries import (
    CHUNK_TYPE,
    MARK,
    MAX_PADDED,
    MIN_PADDED,
    chunk_of,
    encode_chunk,
    is_chunk_record,
    pad,
    padded_size,
    unpad,
)
from ..entries import decode_chunk_entry as decode_chunk

__all__ = ["CHUNK_TYPE", "MARK", "MAX_PADDED", "MIN_PADDED", "chunk_of", "decode_chunk", "encode_chunk",
           "is_chunk_record", "pad", "padded_size", "unpad"]
