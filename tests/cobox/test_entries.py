"""cobox.entries: every entry format of a group's feeds in one module, strict both ways."""

from __future__ import annotations

import msgpack
import pytest

from cobox import entries
from cobox.errors import MalformedChunkError, MalformedLogEntryError, MalformedOpError
from cobox.folders import model, padding

KEY = bytes(range(32))
FEED = b"\x07" * 32


def test_a_sealed_entry_opens_only_at_its_own_place_and_key() -> None:
    sealed = entries.seal(KEY, FEED, 5, b"plain")
    assert entries.open_entry(KEY, FEED, 5, sealed) == b"plain"
    assert entries.open_entry(KEY, FEED, 6, sealed) is None  # moved to another seq
    assert entries.open_entry(KEY, b"\x08" * 32, 5, sealed) is None  # moved to another feed
    assert entries.open_entry(bytes(32), FEED, 5, sealed) is None
    assert entries.open_entry(None, FEED, 5, sealed) is None  # a backup peer has no key
    assert entries.open_entry(KEY, FEED, 5, sealed[:30]) is None  # shorter than nonce + tag


def test_log_entries_round_trip_and_refuse_anything_else() -> None:
    obj = msgpack.unpackb(entries.encode_log("hi", 12.5), raw=False)
    assert entries.decode_log(obj) == (12.5, "hi")
    with pytest.raises(ValueError):
        entries.encode_log("x" * (entries.MAX_TEXT + 1), 1.0)
    for bad in ({**obj, "extra": 1}, {**obj, "time": float("nan")}, {**obj, "text": b"bytes"}, [1], None):
        with pytest.raises(MalformedLogEntryError):
            entries.decode_log(bad)


def test_chunk_and_op_decoders_raise_only_their_own_errors() -> None:
    assert entries.decode_chunk_entry(entries.encode_chunk(b"abc")) == b"abc"
    with pytest.raises(MalformedChunkError):
        entries.decode_chunk_entry(msgpack.packb({"type": "chunk", "data": b"abc"}))  # not padded
    with pytest.raises(MalformedOpError):
        entries.decode_op(msgpack.packb({"type": [1]}), author=bytes(32), seq=0)
    with pytest.raises(MalformedOpError):
        entries.unpack(b"\xc1")  # never valid msgpack


def test_formats_live_in_entries_and_the_model_does_not_import_them() -> None:
    """One way: entries builds on the model's dataclasses; the model knows no encoding."""
    assert padding.decode_chunk is entries.decode_chunk_entry and padding.pad is entries.pad
    assert not hasattr(model, "encode_op") and "entries" not in model.__dict__
    with pytest.raises(AttributeError):
        _ = model.encode_op


def test_encode_chunk_writes_exactly_msgpack_of_the_padded_chunk() -> None:
    # encode_chunk builds the bytes itself (one copy); the format is msgpack's, byte for byte
    # (synthetic nonces and the single-copy rebuild depend on it).
    sizes = [1, 2, 254, 255, 256, 257, 1000, 65400, 65534, 65535, 65536, 65537, 300_000, entries.MAX_CHUNK_BYTES]
    for n in sizes:
        data = bytes(range(256)) * (n // 256) + b"\xff" * (n % 256)
        want = msgpack.packb({"type": "chunk", "data": entries.pad(data)}, use_bin_type=True)
        assert entries.encode_chunk(data) == want, n
        assert entries.encode_chunk(memoryview(data)) == want, n
        assert entries.decode_chunk_entry(want) == data
    with pytest.raises(ValueError):
        entries.encode_chunk(b"")
