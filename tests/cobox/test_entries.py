"""cobox.entries: every entry format of a group's feeds in one module, strict both ways."""

from __future__ import annotations

import msgpack
import pytest

from cobox import entries, entries_seal
from cobox.errors import MalformedChunkError, MalformedLogEntryError, MalformedOpError
from cobox.folders import model, padding

KEY = bytes(range(32))
FEED = b"\x07" * 32


def test_a_sealed_entry_opens_only_at_its_own_place_and_key() -> None:
    sealed = entries_seal.seal(KEY, FEED, 5, b"plain")
    assert entries_seal.open_entry(KEY, FEED, 5, sealed) == b"plain"
    assert entries_seal.open_entry(KEY, FEED, 6, sealed) is None  # moved to another seq
    assert entries_seal.open_entry(KEY, b"\x08" * 32, 5, sealed) is None  # moved to another feed
    assert entries_seal.open_entry(bytes(32), FEED, 5, sealed) is None
    assert entries_seal.open_entry(None, FEED, 5, sealed) is None  # a backup peer has no key
    assert entries_seal.open_entry(KEY, FEED, 5, sealed[:30]) is None  # shorter than nonce + tag


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


def _reference_decode_chunk_entry(plain: bytes) -> bytes:
    # the decoder as it was written first: msgpack, then the padding stripped whole
    try:
        obj = msgpack.unpackb(plain, raw=False, max_bin_len=entries.MAX_PADDED, max_str_len=16, max_array_len=0,
                              max_map_len=2, max_ext_len=0)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise MalformedChunkError("not msgpack") from None
    if type(obj) is not dict or len(obj) != 2 or obj.get("type") != "chunk" or "data" not in obj:
        raise MalformedChunkError("not a chunk entry")
    padded = obj["data"]
    if type(padded) is not bytes or not entries.MIN_PADDED <= len(padded) <= entries.MAX_PADDED:
        raise MalformedChunkError("bad size")
    end = len(padded.rstrip(b"\0")) - 1
    if end < 1 or padded[end] != entries.MARK or entries.padded_size(end + 1) != len(padded):
        raise MalformedChunkError("bad padding")
    return padded[:end]


def test_decode_chunk_entry_accepts_and_refuses_exactly_what_msgpack_and_unpad_do() -> None:
    import random

    rnd = random.Random(5)

    def variants(chunk: bytes) -> list[bytes]:
        good = entries.encode_chunk(chunk)
        padded = entries.pad(chunk)
        out = [good, good[:-1], good + b"\0", good[:-1] + b"\1", good[:20], good[:23], b"", b"\x80"]
        out.append(msgpack.packb({"data": padded, "type": "chunk"}, use_bin_type=True))  # other key order
        out.append(msgpack.packb({"type": "chunk", "data": padded + bytes(4096)}, use_bin_type=True))
        out.append(msgpack.packb({"type": "chunk", "data": chunk + bytes(len(padded) - len(chunk))},
                                 use_bin_type=True))  # no mark
        out.append(msgpack.packb({"type": "chunk", "data": bytes(len(padded))}, use_bin_type=True))  # all zeros
        out.append(msgpack.packb({"type": "chunk", "data": b"\x80" + bytes(len(padded) - 1)}, use_bin_type=True))
        prefix = good[:len(good) - len(padded)]
        if prefix[-3] == 0xC5:  # the same bin in a bin 32 header: valid msgpack, read the same
            out.append(prefix[:-3] + b"\xc6" + len(padded).to_bytes(4, "big") + padded)
        bad = bytearray(good)
        bad[rnd.randrange(len(good))] ^= 1 << rnd.randrange(8)
        out.append(bytes(bad))
        return out

    sizes = [1, 2, 3, 200, 254, 255, 256, 1000, 4000, 65000, 65535, 65536, 70000, 300_000]
    sizes += [rnd.randrange(1, 200_000) for _ in range(40)]
    for n in sizes:
        chunk = rnd.randbytes(n - 1) + rnd.choice((b"\0", b"\x80", b"\x01"))  # a chunk may end like padding
        for plain in variants(chunk):
            try:
                want: bytes | type[MalformedChunkError] = _reference_decode_chunk_entry(plain)
            except MalformedChunkError:
                want = MalformedChunkError
            try:
                got: bytes | type[MalformedChunkError] = entries.decode_chunk_entry(plain)
            except MalformedChunkError:
                got = MalformedChunkError
            assert got == want, (n, plain[:32].hex())
            if want is not MalformedChunkError:
                assert entries.unpad(msgpack.unpackb(plain)["data"]) == want
