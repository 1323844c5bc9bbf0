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
                                         max_size=4).map(tuple)),
    st.builds(m.Have, channel, key, u, ranges, st.booleans()),
    st.builds(lambda c, i, k, s, n, known: m.Request(c, i, k, s, s + n, known),
              channel, u, key, u, st.integers(1, 100), u),
    st.builds(m.Data, channel, u, key, u, st.lists(st.binary(max_size=100), min_size=1,
                                                     max_size=5).map(tuple),
              u, st.binary(min_size=64, max_size=64), nodes, u, nodes),
    st.builds(m.NoData, channel, u, st.text(max_size=50)),
    st.builds(m.Receipt, channel, key, u, key, u, key, st.binary(min_size=64, max_size=64), st.booleans()),
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
    ([5, 0, 1, bytes(32), 5, 5, 0], "start must be below end"),
    ([5, 0, -1, bytes(32), 0, 5, 0], "request id"),
    ([4, 0, bytes(32), 3, [[5, 2]], False], "start must be below end"),
    ([4, 0, bytes(32), 3, [[1, 2]], 1], "incremental"),
    ([6, 0, 1, bytes(32), 0, [], 1, bytes(64), [], 0, []], "no entries"),
    ([3, 0, [[bytes(32), bytes(257)]]], "admission"),
    ({"a": 1}, "undecodable"),
])
def test_malformed_messages_are_refused_with_a_reason(obj, why):
    with pytest.raises(m.DecodeError, match=why):
        m.decode(msgpack.packb(obj, use_bin_type=True))


def test_oversized_data_is_refused():
    big = [bytes(1 << 20)] * 7
    raw = msgpack.packb([6, 0, 1, bytes(32), 0, big, 7, bytes(64), [], 0, []], use_bin_type=True)
    with pytest.raises(m.DecodeError, match="too many bytes"):
        m.decode(raw)
