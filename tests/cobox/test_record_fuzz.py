"""Property tests of the decoders of what other devices write (issue 11, "Beyond the list"):
arbitrary and near-valid entries from a hostile feed, interleaved with an honest feed's, never
raise past the decoders, and every honest operation and log entry is accepted."""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cobox import admission
from cobox.entries import decode_chunk, decode_log, decode_op, encode_op
from cobox.errors import AdmissionError, MalformedChunkError, MalformedLogEntryError, MalformedOpError
from cobox.folders.model import ChunkRef, Delete, Put, Rename, Stamp
from cobox.folders.padding import pad
from cobox.folders.sync import FolderSync
from cobox.grouplog import decode_entry
from cobox.groups import Group
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys

from .feedkeys import feed_key, make_admission

HONEST, HOSTILE = DeviceIdentity.generate(), DeviceIdentity.generate()
KEYS = GroupKeys.from_address(os.urandom(32))
HONEST_FEED, HOSTILE_FEED = feed_key(), feed_key()
H = HONEST.peer_id
REF = ChunkRef(b"\x03" * 32, HONEST_FEED, 0, 5)
HONEST_OPS = [
    Put("a.txt", 5, 0o644, 10**18, (REF,), 1, H, None),
    Put("dir/b.txt", 10, 0o755, 10**18, (REF, REF), 2, H, Stamp(1, H)),
    Delete("a.txt", 3, H, Stamp(1, H)),
    Rename("dir/b.txt", "c.txt", 10, 0o755, 10**18, (REF, REF), 4, H, Stamp(2, H), None),
]
NEAR = [msgpack.unpackb(encode_op(op)) for op in HONEST_OPS] + [
    {"type": "chunk", "data": pad(b"hello")}, {"type": "log", "text": "hi", "time": 1.0}, {"type": "filler"}]
KEYS_SEEN = [*sorted({k for obj in NEAR for k in obj}), "a", "author", "x"]

leaves = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=12)
          | st.binary(max_size=40) | st.sampled_from(["folder/put", "folder/delete", "folder/rename", "chunk",
                                                      "log", "filler", "a.txt", "..", ""]))
objects = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=4) | st.sampled_from(KEYS_SEEN), inner, max_size=6),
                       max_leaves=16)


@st.composite
def near_valid(draw: Any) -> dict[str, Any]:
    obj = dict(draw(st.sampled_from(NEAR)))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(KEYS_SEEN))
        if draw(st.booleans()):
            obj.pop(key, None)
        else:
            obj[key] = draw(objects)
    return obj


def _pack(obj: Any) -> bytes:
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        return b"\xc1"


hostile_entries = st.lists(st.binary(max_size=64) | objects.map(_pack) | near_valid().map(_pack), max_size=12)


def _group() -> Group:
    group = Group(None, "g", KEYS, HONEST, 0.0)  # type: ignore[arg-type]  # decoding needs no store
    for ident, key in ((HONEST, HONEST_FEED), (HOSTILE, HOSTILE_FEED)):
        group._admit(key, make_admission(ident, KEYS.discovery_key, KEYS.membership_key, key))
    return group


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile=hostile_entries, order=st.lists(st.booleans(), min_size=20, max_size=20))
def test_hostile_entries_never_escape_and_honest_ops_all_apply(tmp_path: Path, hostile: list[bytes],
                                                               order: list[bool]) -> None:
    group = _group()
    sync = FolderSync(group, tmp_path)
    honest = [encode_op(op) for op in HONEST_OPS]
    feeds = {True: types.SimpleNamespace(key=HONEST_FEED, writable=False),
             False: types.SimpleNamespace(key=HOSTILE_FEED, writable=False)}
    queues = {True: list(enumerate(honest)), False: list(enumerate(hostile))}
    for pick in order + [True] * len(honest) + [False] * len(hostile):
        if queues[pick]:
            seq, plain = queues[pick].pop(0)
            sync._take(feeds[pick], seq, group.seal(feeds[pick].key, seq, plain))
    assert [op for op in sync._ops if op.author == H] == HONEST_OPS
    assert {op.author for op in sync._ops} <= {H, HOSTILE.peer_id}  # nothing claims a third device
    assert group.refusals.count(H) == 0


@settings(max_examples=150, deadline=None)
@given(hostile=hostile_entries)
def test_the_log_decoder_is_total(hostile: list[bytes]) -> None:
    group = _group()
    good = msgpack.packb({"type": "log", "text": "honest", "time": 1.5})
    for seq, plain in enumerate(hostile):
        entry = decode_entry(group, HOSTILE_FEED, seq, group.seal(HOSTILE_FEED, seq, plain))
        assert entry is None or entry.author == HOSTILE.peer_id
        entry = decode_entry(group, HONEST_FEED, seq, group.seal(HONEST_FEED, seq, good))
        assert entry is not None and entry.refused is None and (entry.text, entry.author) == ("honest", H)
    assert group.refusals.count(H) == 0


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=80) | objects.map(_pack) | near_valid().map(_pack), seq=st.integers(0, 2**40))
def test_each_decoder_raises_only_its_own_error(data: bytes, seq: int) -> None:
    try:
        decode_op(data, author=H, seq=seq)
    except MalformedOpError:
        pass
    try:
        obj = msgpack.unpackb(data, raw=False)
    except Exception:  # not msgpack: what unpack() turns into MalformedOpError
        return
    for decode, error in ((decode_chunk, MalformedChunkError), (decode_log, MalformedLogEntryError)):
        try:
            decode(obj)
        except error:
            pass


@settings(max_examples=200, deadline=None)
@given(adm=st.binary(max_size=260) | st.binary(min_size=192, max_size=192))
def test_admissions_raise_only_admission_errors(adm: bytes) -> None:
    for membership in (KEYS.membership_key, None):
        with pytest.raises(AdmissionError):
            admission.check(adm, KEYS.discovery_key, HONEST_FEED, membership)
