import msgpack
import pytest

from cobox.entries import decode_op, encode_op
from cobox.errors import InvalidPathError, MalformedOpError
from cobox.folders.model import ChunkRef, Delete, Put, Stamp
from cobox.folders.paths import case_key, conflict_path, normalize_path

from .helpers import FEED, A, B, put, ref, rename

FEED2 = b"\xfd" * 32


def test_round_trips() -> None:
    p = Put("docs/a.txt", 10, 0o755, 123, (ref(b"01234"), ChunkRef(b"\x01" * 32, FEED2, 9, 5)), 7, A,
            Stamp(3, B))
    d = Delete("docs/a.txt", 8, B, p.stamp)
    r = rename(p, "docs/b.txt", 9, A)
    e = Put("empty", 0, 0o644, 0, (), 1, A, None)
    for op in (p, d, r, e):
        assert decode_op(encode_op(op), author=op.author, seq=None) == op


def test_feed_table_keeps_records_small() -> None:
    refs = tuple(ChunkRef(bytes([i % 256]) * 32, FEED, i, 65536) for i in range(10_000))
    p = Put("big", 65536 * 10_000, 0o644, 0, refs, 2, A, None)
    data = encode_op(p)
    assert len(data) < 10_000 * 48
    assert decode_op(data, author=A, seq=0) == p


def _raw(op: Put) -> dict:
    return msgpack.unpackb(encode_op(op), raw=False)


@pytest.mark.parametrize("mutate", [
    lambda o: o.update(v=2),
    lambda o: o.update(extra=1),
    lambda o: o.pop("m"),
    lambda o: o.update(k=True),
    lambda o: o.update(k=0),
    lambda o: o.update(a=A),  # records carry no author: the feed's owner is the author
    lambda o: o.update(p="../etc/passwd"),
    lambda o: o.update(p="/abs"),
    lambda o: o.update(p="a//b"),
    lambda o: o.update(p="cafe\u0301"),  # not NFC
    lambda o: o.update(s=o["s"] + 1),  # sizes do not add up
    lambda o: o.update(b=[99, B]),  # base not older than the record
    lambda o: o.update(c=[[b"\x00" * 32, 1, 0, 5]]),  # feed index out of range
    lambda o: o.update(m=0o17777),
    lambda o: o.update(t=-1),
    lambda o: o.update(type="folder/chmod"),
])
def test_strict_decode(mutate) -> None:
    obj = _raw(put("a.txt", b"hello", 5, A, Stamp(2, B)))
    mutate(obj)
    with pytest.raises(MalformedOpError):
        decode_op(msgpack.packb(obj, use_bin_type=True), author=A, seq=0)


@pytest.mark.parametrize("data", [b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"type": "log"}),
                                  encode_op(put("a", b"x", 1, A)) + b"\x00"])
def test_garbage(data: bytes) -> None:
    with pytest.raises(MalformedOpError):
        decode_op(data, author=A, seq=0)


def test_rename_onto_itself_is_refused() -> None:
    obj = msgpack.unpackb(encode_op(rename(put("a", b"x", 1, A), "b", 2, A)), raw=False)
    obj["d"] = "a"
    with pytest.raises(MalformedOpError):
        decode_op(msgpack.packb(obj, use_bin_type=True), author=A, seq=0)


def test_encode_refuses_what_decode_would() -> None:
    with pytest.raises(MalformedOpError):
        encode_op(Put("../x", 0, 0o644, 0, (), 1, A, None))


@pytest.mark.parametrize("bad", ["", "/a", "a/../b", "..", "./a", "a/", "a//b", "a\x00b", "a\\b", "a\nb",
                                 "x" * 256, "d/.cobox-tmp-123"])
def test_paths_refused(bad: str) -> None:
    with pytest.raises(InvalidPathError):
        normalize_path(bad)


def test_paths_normalized() -> None:
    assert normalize_path("cafe\u0301/na\u0308ive.txt") == "caf\u00e9/n\u00e4ive.txt"
    assert normalize_path("日本語/ファイル.txt") == "日本語/ファイル.txt"
    assert case_key("Docs/A.txt") == case_key("docs/a.TXT")


def test_conflict_names() -> None:
    t = 1_700_000_000 * 10**9
    assert conflict_path("docs/report.txt", A, t) == "docs/report.conflict-aaaaaaaa-20231114-221320.txt"
    assert conflict_path("a.tar.gz", B, t) == "a.tar.conflict-bbbbbbbb-20231114-221320.gz"
    assert conflict_path(".bashrc", A, t) == ".bashrc.conflict-aaaaaaaa-20231114-221320"
    assert conflict_path("Makefile", A, t) == "Makefile.conflict-aaaaaaaa-20231114-221320"
    long = conflict_path("x" * 250 + ".txt", A, t)
    assert len(long.encode()) <= 255 and normalize_path(long) == long
