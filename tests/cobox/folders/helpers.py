"""Small builders for folder tests: fixed device ids and fake chunk refs."""

from cobox.folders.chunking import chunk_id
from cobox.folders.model import ChunkRef, Delete, Put, Rename, Stamp

A, B, C = b"\xaa" * 32, b"\xbb" * 32, b"\xcc" * 32
FEED = b"\xfe" * 32
T0 = 1_700_000_000 * 10**9


def ref(content: bytes, seq: int = 0, feed: bytes = FEED) -> ChunkRef:
    return ChunkRef(chunk_id(content), feed, seq, len(content))


def put(path: str, content: bytes, clock: int, author: bytes, base: Stamp | None = None,
        mtime: int = T0) -> Put:
    refs = (ref(content, clock),) if content else ()
    return Put(path, len(content), 0o644, mtime + clock * 10**9, refs, clock, author, base)


def delete(path: str, clock: int, author: bytes, base: Stamp | None) -> Delete:
    return Delete(path, clock, author, base)


def rename(op: Put, dst: str, clock: int, author: bytes, dst_base: Stamp | None = None) -> Rename:
    return Rename(op.path, dst, op.size, op.mode, op.mtime, op.chunks, clock, author, op.stamp, dst_base)
