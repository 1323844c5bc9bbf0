"""The wire format: round trips, strict decoding, and fuzzing of the decoder."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from networker import messages as m

key = st.binary(min_size=32, max_size=32)
u = st.integers(0, (1 << 40))
ranges = st.lists(st.tuples(st.integers(0, 1000), st.integers(1, 1000)).map(
    lambda t: (t[0], t[0] + t[1])), max_size=5).map(tuple)
nodes = st.lists(st.tuples(u, key), max_size=6).map(tuple)
channel = st.integers(0, m.MAX_CHANNELS)

messages = st.one_of(
    st.builds(m.Open, channel, key, key),
    st.builds(m.Close, channel, st.text(max_size=50)),
    st.builds(m.Feeds, channel, st.lists(st.tuples(key, st.sampled_from([b"", bytes(32)])),
                                         max_size=4).map(tuple), st.booleans()),
    st.builds(m.Have, channel, key, u, ranges, st.booleans()),
    st.builds(lambda c, i, k, s, n, known, chained: m.Request(c, i, k, s, s + n, known, chained),
              channel, u, key, u, st.integers(1, 100), u, st.booleans()),
    st.builds(m.Data, channel, u, key, u, st.lists(st.binary(max_size=100), min_size=1,
                                                     max_size=5).map(tuple),
              u, st.binary(min_size=64, max_size=64), nodes, u, nodes),
    st.builds(m.NoData, channel, u, st.text(max_size=50)),
    st.builds(m.Extension, channel, st.text(max_size=20), st.binary(max_size=100)),
    st.builds(m.Call, st.just(0), u, st.text(max_size=20), st.binary(max_size=100)),
    st.builds(m.Reply, st.just(0), u, st.booleans(), st.binary(max_size=100)),
)


@given(messages)
def test_round_trip(msg):
    assert m.decode(m.encode(msg)) == msg


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_random_bytes_decode_or_raise_decode_error(data):
    try:
        m.decode(data)
    except m.DecodeError:
        pass


@settings(max_examples=300)
@given(messages, st.data())
def test_mutated_messages_decode_or_raise_decode_error(msg, data):
    raw = bytearray(m.encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    try:
        m.decode(bytes(raw))
    except m.DecodeError:
        pass


@pytest.mark.parametrize("obj,why", [
    ([99, 0], "unknown message type"),
    (["x", 0], "unknown message type"),
    ([1, 0, bytes(32)], "wrong number of fields"),
    ([1, 9999, bytes(32), bytes(32)], "channel"),
    ([1, 0, bytes(31), bytes(32)], "discovery key"),
    ([5, 0, 1, bytes(32), 5, 5, 0, False], "start must be below end"),
    ([5, 0, -1, bytes(32), 0, 5, 0, False], "request id"),
    ([5, 0, 1, bytes(32), 0, 5, 0, 1], "chained"),
    ([4, 0, bytes(32), 3, [[5, 2]], False], "start must be below end"),
    ([4, 0, bytes(32), 3, [[1, 2]], 1], "incremental"),
    ([6, 0, 1, bytes(32), 0, [], 1, bytes(64), [], 0, []], "no entries"),
    ([3, 0, [[bytes(32), bytes(257)]], False], "admission"),
    ([3, 0, [[bytes(32), b""]], 1], "more"),
    ({"a": 1}, "map or extension"),
    ([1, 0, msgpack.ExtType(1, b"x"), bytes(32)], "map or extension"),
    ([3, 0, [[[bytes(32)], b""]]], "nested deeper"),
])
def test_malformed_messages_are_refused_with_a_reason(obj, why):
    with pytest.raises(m.DecodeError, match=why):
        m.decode(msgpack.packb(obj, use_bin_type=True))


def test_oversized_data_is_refused():
    big = [bytes(1 << 20)] * 7
    raw = msgpack.packb([6, 0, 1, bytes(32), 0, big, 7, bytes(64), [], 0, []], use_bin_type=True)
    with pytest.raises(m.DecodeError, match="too many bytes"):
        m.decode(raw)


def test_largest_messages_of_each_kind_pass_the_shape_check():
    k = bytes(32)
    biggest = [
        m.Data(0, 1, k, 0, tuple(b"" for _ in range(m.MAX_ENTRIES)), 9, bytes(64),
               tuple((i, k) for i in range(m.MAX_PROOF_NODES)), 1, tuple((i, k) for i in range(m.MAX_PROOF_NODES))),
        m.Feeds(0, tuple((k, bytes(m.MAX_ADMISSION)) for _ in range(m.MAX_FEEDS))),
        m.Have(0, k, m.MAX_INT, tuple((2 * i, 2 * i + 1) for i in range(m.MAX_RANGES))),
    ]
    for msg in biggest:
        assert m.decode(m.encode(msg)) == msg


@pytest.mark.parametrize("raw,why", [
    (b"\xdc\xff\xff" + b"\x90" * 65535, "objects"),            # many empty arrays
    (b"\x91" * 100_000 + b"\x90", "nested deeper"),               # deep nesting
    (b"\xdd\xff\xff\xff\xff", "objects"),                      # a count beyond the budget
    (b"\xdc\x00\x05\x01", "truncated"),                          # a count the bytes cannot hold
    (b"\x92\x01", "truncated"),
    (b"\x92\x01\x02\x03", "trailing"),
    (b"\x92\x01\xc4\x10ab", "truncated"),                        # a bin longer than the message
])
def test_shape_check_refuses_bombs_and_truncation_without_decoding(raw, why):
    with pytest.raises(m.DecodeError, match=why):
        m.check_shape(raw)


def test_early_limit_admits_only_small_messages_and_service_calls():
    assert m.early_limit(m.encode(m.Open(1, bytes(32), bytes(32)))) == m.PRE_CHANNEL_BYTES
    call = m.encode(m.Call(0, 1, "recovery", bytes(m.MAX_CALL_BYTES)))
    reply = m.encode(m.Reply(0, 1, True, bytes(m.MAX_CALL_BYTES)))
    assert len(call) <= m.early_limit(call) and len(reply) <= m.early_limit(reply)
    assert m.early_limit(b"\xdc\xff\xff") == m.PRE_CHANNEL_BYTES


def _depth(obj) -> int:
    return 1 + max(map(_depth, obj), default=0) if isinstance(obj, list) else 0


trees = st.recursive(st.one_of(st.integers(-(1 << 63), (1 << 64) - 1), st.binary(max_size=300),
                               st.text(max_size=40), st.booleans(), st.none(), st.floats(allow_nan=False)),
                     lambda inner: st.lists(inner, max_size=6), max_leaves=40)


@settings(max_examples=300)
@given(trees)
def test_shape_check_agrees_with_msgpack_on_depth(obj):
    raw = msgpack.packb(obj, use_bin_type=True)
    if _depth(obj) <= m.MAX_DEPTH:
        m.check_shape(raw)
    else:
        with pytest.raises(m.DecodeError, match="nested deeper"):
            m.check_shape(raw)
