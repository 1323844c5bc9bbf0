"""networker.inbound: frames cut in place from what the transport reads, back-pressure, and
the transport handed back to its stream pair with the bytes not taken (relay circuits).

The transport here is a stand-in that records pauses; the protocol's own calls are the ones a
selector transport makes (get_buffer/buffer_updated, eof_received, connection_lost). The real
sockets are exercised by every test that opens a SecureConnection."""

from __future__ import annotations

import asyncio
import random
import struct

import pytest

from networker import inbound
from networker.errors import RemoteProtocolError
from networker.inbound import Inbound


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.protocol: asyncio.BaseProtocol | None = None
        self.reading = True
        self.pauses = 0
        self.closing = False

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def pause_reading(self) -> None:
        assert self.reading, "paused twice"
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        assert not self.reading, "resumed while reading"
        self.reading = True

    def is_closing(self) -> bool:
        return self.closing


def frame(payload: bytes) -> bytes:
    return struct.pack(">H", len(payload)) + payload


def arrive(proto: Inbound, data: bytes, step: int = 7000) -> None:
    """What a selector transport does with ``data`` coming in reads of at most ``step`` bytes."""
    view = memoryview(data)
    while view:
        buf = proto.get_buffer(-1)
        assert len(buf) > 0
        k = min(len(buf), step, len(view))
        buf[:k] = view[:k]
        proto.buffer_updated(k)
        view = view[k:]


def setup(leftover: bytes = b"", write_paused: bool = False) -> tuple[FakeTransport, asyncio.StreamReader, Inbound]:
    transport = FakeTransport()
    reader = asyncio.StreamReader(limit=2 ** 16)
    streams = asyncio.StreamReaderProtocol(reader)
    transport.set_protocol(streams)
    streams.connection_made(transport)
    if leftover:
        reader.feed_data(leftover)
    if write_paused:
        streams.pause_writing()
    proto = Inbound(transport, streams, reader)
    assert transport.protocol is proto
    return transport, reader, proto


async def test_frames_split_across_reads_come_whole_and_in_order() -> None:
    _, _, proto = setup()
    payloads = [bytes([i]) * n for i, n in enumerate([1, 300, 65535, 17, 65535, 40000])]
    arrive(proto, b"".join(frame(p) for p in payloads))
    got = [bytes(await asyncio.wait_for(proto.frame(), 2)) for _ in payloads]
    assert got == payloads


async def test_frames_taken_while_reads_come_in_odd_sizes_are_whole() -> None:
    """Reads and takes interleaved, so the unread bytes move to the buffer's front while they
    overlap where they go (the tail too short for another read)."""
    rng = random.Random(5)
    _, _, proto = setup()
    payloads = [rng.randbytes(rng.choice([1, 7, 1000, 16_000, 40_000, 65_535])) for _ in range(300)]
    stream = memoryview(b"".join(frame(p) for p in payloads))
    got: list[bytes] = []
    while stream:
        k = rng.randint(1, 100_000)
        arrive(proto, bytes(stream[:k]), step=rng.randint(1, 70_000))
        stream = stream[k:]
        while (view := proto._next()) is not None:  # every frame complete so far, without waiting
            got.append(bytes(view))
    assert got == payloads


async def test_a_frame_waits_for_its_last_byte() -> None:
    _, _, proto = setup()
    data = frame(b"x" * 50_000)
    arrive(proto, data[:-1])
    waiting = asyncio.ensure_future(proto.frame())
    await asyncio.sleep(0)
    assert not waiting.done()
    arrive(proto, data[-1:])
    assert bytes(await asyncio.wait_for(waiting, 2)) == b"x" * 50_000


async def test_bytes_the_reader_held_at_takeover_come_first() -> None:
    _, _, proto = setup(leftover=frame(b"first") + frame(b"sec"))
    arrive(proto, frame(b"third"))
    assert [bytes(await proto.frame()) for _ in range(3)] == [b"first", b"sec", b"third"]


async def test_one_task_waits_for_frames_at_a_time() -> None:
    _, _, proto = setup()
    first = asyncio.ensure_future(proto.frame())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await proto.frame()
    arrive(proto, frame(b"one"))
    assert bytes(await asyncio.wait_for(first, 2)) == b"one"


async def test_reading_pauses_when_full_and_resumes_when_taken() -> None:
    transport, _, proto = setup()
    n = inbound.HIGH // 65537 + 2
    arrive(proto, frame(b"a" * 65535) * n, step=65536)
    assert not transport.reading and transport.pauses == 1
    taken = 0
    while not transport.reading:
        await proto.frame()
        taken += 1
        assert taken <= n
    # resumed once no more than LOW bytes waited, not at the first frame taken
    assert (n - taken) * 65537 <= inbound.LOW
    assert taken > 1


async def test_an_empty_frame_is_a_protocol_error() -> None:
    _, _, proto = setup()
    arrive(proto, b"\x00\x00")
    with pytest.raises(RemoteProtocolError):
        await proto.frame()


async def test_end_of_connection_after_the_frames_that_completed() -> None:
    _, _, proto = setup()
    arrive(proto, frame(b"last") + frame(b"cut off")[:4])
    proto.connection_lost(None)
    assert bytes(await proto.frame()) == b"last"
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(proto.frame(), 2)


async def test_a_waiting_reader_and_drain_wake_when_the_connection_is_lost() -> None:
    _, _, proto = setup()
    proto.pause_writing()
    waiting = asyncio.ensure_future(proto.frame())
    draining = asyncio.ensure_future(proto.drain())
    await asyncio.sleep(0)
    assert not waiting.done() and not draining.done()
    proto.connection_lost(ConnectionResetError("reset"))
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(waiting, 2)
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(draining, 2)


async def drain_waits_for_resume(proto: Inbound) -> None:
    draining = asyncio.ensure_future(proto.drain())
    await asyncio.sleep(0)
    assert not draining.done()
    proto.resume_writing()
    await asyncio.wait_for(draining, 2)


async def test_drain_waits_for_resume_writing() -> None:
    _, _, proto = setup()
    await asyncio.wait_for(proto.drain(), 2)  # not paused: at once
    proto.pause_writing()
    await drain_waits_for_resume(proto)


async def test_give_back_leaves_the_bytes_not_taken_to_the_stream_reader() -> None:
    transport, reader, proto = setup()
    raw = b"raw bytes of another session" * 1000
    arrive(proto, frame(b"control") + raw[:10_000])
    assert bytes(await proto.frame()) == b"control"
    proto.give_back()
    assert transport.protocol is not proto
    transport.protocol.data_received(raw[10_000:])  # type: ignore[union-attr]
    assert await asyncio.wait_for(reader.readexactly(len(raw)), 2) == raw


async def test_give_back_after_the_remote_closed_keeps_the_bytes_before_the_end() -> None:
    transport, reader, proto = setup()
    arrive(proto, frame(b"control") + b"tail")
    proto.eof_received()
    proto.connection_lost(None)
    assert bytes(await proto.frame()) == b"control"
    proto.give_back()
    assert await asyncio.wait_for(reader.read(), 2) == b"tail"


async def test_give_back_resumes_a_paused_transport() -> None:
    transport, reader, proto = setup()
    arrive(proto, frame(b"c") + b"z" * inbound.HIGH, step=65536)
    assert not transport.reading
    assert bytes(await proto.frame()) == b"c"
    proto.give_back()
    assert transport.reading
    assert await asyncio.wait_for(reader.readexactly(inbound.HIGH), 2) == b"z" * inbound.HIGH


async def test_a_task_still_waiting_at_give_back_is_told() -> None:
    _, _, proto = setup()
    proto.pause_writing()
    waiting = asyncio.ensure_future(proto.frame())
    draining = asyncio.ensure_future(proto.drain())
    await asyncio.sleep(0)
    proto.give_back()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(waiting, 2)
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(draining, 2)


async def test_a_connection_of_small_messages_keeps_a_small_buffer() -> None:
    _, _, proto = setup()
    for _ in range(200):  # bursts of small frames, taken a little later each time
        arrive(proto, frame(b"m" * 300) * 10, step=1500)
        for _ in range(10):
            assert bytes(await proto.frame()) == b"m" * 300
    arrive(proto, frame(b"m" * 300) * 100, step=9000)  # 30 KB unread: it doubles, not to CAPACITY
    assert len(proto._buf) <= 4 * inbound.INITIAL
    arrive(proto, frame(b"d" * 65535) * 3, step=65536)  # a Data message's frames: it grows
    assert len(proto._buf) >= 3 * 65537


async def test_reads_that_fill_the_buffer_grow_it_even_when_taken_at_once() -> None:
    """A bulk connection whose reader keeps up: each read fills what it was offered (more is
    waiting in the socket), so the buffer doubles up to CAPACITY even though few bytes are ever
    left unread (small buffers mean a system call per few kilobytes)."""
    _, _, proto = setup()
    stream = memoryview(frame(b"d" * 65535) * 200)
    taken = 0
    while len(stream) > len(proto._buf):
        buf = proto.get_buffer(-1)
        buf[:] = stream[:len(buf)]  # the kernel had more: the read fills the whole offer
        proto.buffer_updated(len(buf))
        stream = stream[len(buf):]
        while (view := proto._next()) is not None:
            assert bytes(view) == b"d" * 65535
            taken += 1
    assert taken > 0
    assert inbound.CAPACITY <= len(proto._buf) <= 2 * inbound.CAPACITY


async def test_a_write_pause_at_takeover_is_carried_over() -> None:
    _, _, proto = setup(write_paused=True)
    await drain_waits_for_resume(proto)


async def test_a_transport_without_buffered_reads_is_served_too() -> None:
    _, _, proto = setup()
    data = frame(b"q" * 60_000) + frame(b"r" * 65_535)
    proto.data_received(data[:30_000])
    proto.data_received(data[30_000:])
    assert bytes(await proto.frame()) == b"q" * 60_000
    assert bytes(await proto.frame()) == b"r" * 65_535
