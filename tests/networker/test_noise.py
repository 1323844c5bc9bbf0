"""Noise sessions driven in memory: no sockets."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from networker.errors import (
    HandshakeError,
    MessageTooLargeError,
    PeerKeyMismatchError,
    RemoteProtocolError,
)
from networker.framing import FrameDecoder
from networker.identity import DeviceIdentity
from networker.noise import NoiseSession

A, B = DeviceIdentity.generate(), DeviceIdentity.generate()


def handshake(expected: bytes | None = None, tamper=None):
    i = NoiseSession(A, initiator=True, expected_peer_id=expected)
    r = NoiseSession(B, initiator=False)
    to_r = i.start()
    step = 0
    while not (i.complete and r.complete):
        to_i = []
        for msg in to_r:
            step += 1
            to_i += r.receive_handshake(tamper(step, msg) if tamper else msg)
        to_r = []
        for msg in to_i:
            step += 1
            to_r += i.receive_handshake(tamper(step, msg) if tamper else msg)
    return i, r


def unframe(data: bytes) -> list[bytes]:
    return FrameDecoder().feed(data)


def deliver(sender: NoiseSession, receiver: NoiseSession, message: bytes) -> list[bytes]:
    out = []
    for frame in unframe(sender.seal(message)):
        out += receiver.open(frame)
    return out


def test_both_sides_learn_each_other_and_share_the_handshake_hash():
    i, r = handshake(expected=B.peer_id)
    assert i.remote_peer_id == B.peer_id and r.remote_peer_id == A.peer_id
    assert i.handshake_hash == r.handshake_hash and len(i.handshake_hash) == 64
    assert deliver(i, r, b"hello") == [b"hello"]
    assert deliver(r, i, b"") == [b""]


def test_wrong_expected_key_fails():
    with pytest.raises(PeerKeyMismatchError):
        handshake(expected=DeviceIdentity.generate().peer_id)


@pytest.mark.parametrize("step", [1, 2, 3])
def test_tampered_handshake_fails(step):
    def flip(n, msg):
        return msg[:-1] + bytes([msg[-1] ^ 1]) if n == step else msg

    with pytest.raises(HandshakeError):
        handshake(tamper=flip)


@pytest.mark.parametrize("size", [65519, 65520, 200_000, 1 << 20])
def test_large_messages_are_split_and_reassembled(size):
    i, r = handshake()
    msg = os.urandom(size)
    frames = unframe(i.seal(msg))
    assert len(frames) > 1
    got = []
    for frame in frames:
        got += r.open(frame)
    assert got == [msg]


def test_oversize_is_refused_on_both_ends():
    i, r = handshake()
    i.max_message_bytes = 1000
    with pytest.raises(MessageTooLargeError):
        i.seal(bytes(1001))
    r.max_message_bytes = 1000
    i.max_message_bytes = 1 << 20
    with pytest.raises(RemoteProtocolError, match="announced"):
        deliver(i, r, bytes(5000))


def test_flipped_ciphertext_is_fatal():
    i, r = handshake()
    frame = unframe(i.seal(b"payload"))[0]
    with pytest.raises(RemoteProtocolError, match="decrypt"):
        r.open(frame[:-1] + bytes([frame[-1] ^ 0x80]))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=10), st.data())
def test_any_chunking_of_the_stream_reassembles(messages, data):
    i, r = handshake()
    stream = b"".join(i.seal(m) for m in messages)
    decoder = FrameDecoder()
    got = []
    pos = 0
    while pos < len(stream):
        n = data.draw(st.integers(1, 5000))
        for frame in decoder.feed(stream[pos:pos + n]):
            got += r.open(frame)
        pos += n
    assert got == messages


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_garbage_after_handshake_never_crashes(garbage):
    _, r = handshake()
    try:
        for frame in FrameDecoder().feed(garbage):
            r.open(frame)
    except RemoteProtocolError:
        pass


def test_all_zero_ephemeral_key_is_a_handshake_error():
    r = NoiseSession(B, initiator=False)
    with pytest.raises(HandshakeError):
        r.receive_handshake(bytes(32))


@pytest.mark.parametrize("size", [0, 100, 65515, 65516, 300_000])
def test_transport_messages_are_noiseprotocols_own(size):
    """The transport does its own ChaCha20-Poly1305 calls: the frames must be exactly what
    noiseprotocol's transport (kept untouched in each session) seals and opens."""
    msg = os.urandom(size)
    i, r = handshake()
    frames = unframe(i.seal(msg))
    plain = b"".join(bytes(r._noise.decrypt(f)) for f in frames)  # the library's own decrypt
    assert plain == len(msg).to_bytes(4, "big") + msg
    i, r = handshake()
    data = len(msg).to_bytes(4, "big") + msg
    got = []
    for k in range(0, len(data), 65519):
        got += r.open(bytes(i._noise.encrypt(data[k:k + 65519])))  # the library's own encrypt
    assert got == [msg]


def test_a_replayed_frame_is_fatal():
    i, r = handshake()
    frame = unframe(i.seal(b"one"))[0]
    assert r.open(frame) == [b"one"]
    with pytest.raises(RemoteProtocolError, match="decrypt"):
        r.open(frame)  # the nonce moved on: the same ciphertext no longer opens


# -- opening in place ---------------------------------------------------------------------------

def test_several_messages_in_one_frame_and_a_message_over_many_are_opened():
    """Our sender starts each message in a frame of its own; another may pack them, and a large
    message continues over frames, each decrypted in place into the message."""
    i, r = handshake()
    packed = b"".join(len(m).to_bytes(4, "big") + m for m in (b"one", b"", b"three"))
    assert i._tx is not None
    frame = (len(packed) + 16).to_bytes(2, "big") + i._tx.aead.encrypt(i._tx.nonce(), packed, None)
    big = os.urandom(3 * 65519)
    got = []
    for f in unframe(frame + bytes(i.seal(big)) + bytes(i.seal(b"after"))):
        got += r.open(f)
    assert got == [b"one", b"", b"three", big, b"after"]


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_flipped_frame_anywhere_in_a_message_is_fatal(where):
    i, r = handshake()
    frames = unframe(i.seal(os.urandom(3 * 65519)))
    k = {"first": 0, "middle": 1, "last": len(frames) - 1}[where]
    frames[k] = frames[k][:-1] + bytes([frames[k][-1] ^ 0x01])
    with pytest.raises(RemoteProtocolError, match="decrypt"):
        for f in frames:
            r.open(f)


def test_an_announced_length_alone_does_not_make_the_session_hold_megabytes():
    """The message's buffer grows as its bytes come: a peer that announces 8 MiB and sends
    a few bytes costs this side at most the first room (then a message of 3 MiB is whole)."""
    from networker.noise import FIRST_ROOM
    i, r = handshake()
    frames = unframe(i.seal(os.urandom(8 * 1024 * 1024 - 100)))
    assert r.open(frames[0]) == []
    assert len(r._message) <= FIRST_ROOM
    i, r = handshake()
    big = os.urandom(3 * 1024 * 1024 + 17)
    got = []
    for f in unframe(i.seal(big)):
        got += r.open(f)
    assert got == [big] and len(got[0]) == len(big)
