"""Noise connections over real loopback TCP and unix sockets."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import stat

import pytest

from networker import transport
from networker.address import Address, parse
from networker.errors import DialError, PeerKeyMismatchError
from networker.identity import DeviceIdentity
from tests.helpers import until

SERVER, CLIENT = DeviceIdentity.generate(), DeviceIdentity.generate()


async def echo_server(address: Address, **kw):
    accepted: list[transport.SecureConnection] = []

    async def on_connection(conn: transport.SecureConnection) -> None:
        accepted.append(conn)

        async def echo() -> None:
            try:
                while True:
                    await conn.send(b"echo:" + await conn.recv())
            except Exception:
                conn.close()

        asyncio.get_running_loop().create_task(echo())

    listener = await transport.listen(address, SERVER, on_connection, **kw)
    return listener, accepted


async def roundtrip(addr: str, payload: bytes) -> tuple[bytes, transport.SecureConnection]:
    async with asyncio.timeout(10):
        conn = await transport.dial(parse(addr), CLIENT)
        await conn.send(payload)
        reply = await conn.recv()
    conn.close()
    return reply, conn


@pytest.mark.parametrize("kind", ["tcp4", "tcp6", "unix"])
async def test_round_trip_both_directions(kind, tmp_path):
    if kind == "tcp4":
        address = Address("tcp", host="127.0.0.1", port=0)
    elif kind == "tcp6":
        address = Address("tcp", host="::1", port=0)
    else:
        address = Address("unix", path=str(tmp_path / "s.sock"))
    try:
        listener, accepted = await echo_server(address)
    except OSError as e:  # a machine without IPv6 loopback
        pytest.skip(f"cannot listen on {address.format()}: {e}")
    try:
        big = bytes(range(256)) * 4000  # ~1 MB: several Noise messages
        reply, conn = await roundtrip(listener.addresses[0], big)
        assert reply == b"echo:" + big
        assert conn.remote_peer_id == SERVER.peer_id
        assert accepted[0].remote_peer_id == CLIENT.peer_id
        assert accepted[0].handshake_hash == conn.handshake_hash
        if kind == "unix":
            assert stat.S_IMODE((tmp_path / "s.sock").stat().st_mode) == 0o600
    finally:
        listener.close()


async def test_wrong_peer_key_is_refused():
    listener, _ = await echo_server(Address("tcp", host="127.0.0.1", port=0))
    try:
        wrong = parse(listener.addresses[0]).alternatives[0].with_key(DeviceIdentity.generate().peer_id)
        with pytest.raises(PeerKeyMismatchError):
            async with asyncio.timeout(10):
                await transport.dial_one(wrong, CLIENT)
    finally:
        listener.close()


async def test_garbage_and_stalling_clients_are_dropped_while_others_are_served():
    listener, _ = await echo_server(Address("tcp", host="127.0.0.1", port=0), handshake_timeout=0.5)
    port = parse(listener.addresses[0]).alternatives[0].port
    try:
        async with asyncio.timeout(10):
            # Garbage: a frame that is no Noise message.
            r1, w1 = await asyncio.open_connection("127.0.0.1", port)
            w1.write(b"\x00\x05hello" + b"\xff" * 100)
            # Stalling: connects, says nothing.
            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
            # A good client is served meanwhile.
            reply, _ = await roundtrip(listener.addresses[0], b"hi")
            assert reply == b"echo:hi"
            assert await r1.read() == b""  # closed by the server
            assert await r2.read() == b""  # closed after the handshake timeout
            w1.close()
            w2.close()
    finally:
        listener.close()


async def test_alternatives_are_tried_in_order():
    listener, _ = await echo_server(Address("tcp", host="127.0.0.1", port=0))
    # A port that was just free: nothing listens there.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    dead_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    key = parse(listener.addresses[0]).alternatives[0].format().split("~", 1)[1]
    try:
        reply, _ = await roundtrip(f"tcp:127.0.0.1:{dead_port}~{key};{listener.addresses[0]}", b"x")
        assert reply == b"echo:x"
        with pytest.raises(DialError) as err:
            async with asyncio.timeout(10):
                await transport.dial(parse(f"tcp:127.0.0.1:{dead_port}~{key};unix:/nonexistent/s~{key}"),
                                     CLIENT)
        assert len(err.value.reasons) == 2
    finally:
        listener.close()


async def test_pending_handshakes_are_capped_and_the_newest_gets_its_chance():
    listener, accepted = await echo_server(Address("tcp", host="127.0.0.1", port=0), max_pending=4,
                                           max_pending_per_ip=2)
    port = parse(listener.addresses[0]).alternatives[0].port
    stalls: list[asyncio.StreamWriter] = []
    try:
        async with asyncio.timeout(10):
            for i in range(12):  # never say a word, from three IPs
                _, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(f"127.0.0.{2 + i % 3}", 0))
                stalls.append(w)
            await until(lambda: listener.throttle.counts["evicted"] >= 8, what="the listener to push out the oldest")
            assert len(listener.pending) <= 4
            for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
                assert listener.pending.count(ip) <= 2
            reply, _ = await roundtrip(listener.addresses[0], b"hi")  # an honest client still gets through
            assert reply == b"echo:hi" and len(accepted) == 1
    finally:
        for w in stalls:
            w.close()
        listener.close()


async def test_out_of_file_descriptors_pauses_accepting_with_one_log_line(caplog):
    """``accept`` failing with EMFILE: the listener sheds pending handshakes, backs off and logs
    one line for all of it, no traceback."""
    errors = 0
    shed = []
    release = asyncio.Event()

    async def accept(sock):
        nonlocal errors
        if len(shed) < 2:
            ours, theirs = socket.socketpair()
            shed.append(theirs)
            return ours, ""
        if errors < 200:
            errors += 1
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        await release.wait()
        raise OSError(errno.EBADF, "closed")

    probe = socket.socket()
    listener = transport.Listener([probe], ["tcp:127.0.0.1:1"], None, SERVER, lambda conn: asyncio.sleep(0),
                                  handshake_timeout=30, max_pending=8, max_pending_per_ip=8, refuse=None,
                                  on_bad_handshake=None, accept=accept)
    listener.backoff = (0.0001, 0.001)
    try:
        with caplog.at_level(logging.DEBUG, logger="networker.transport"):
            listener.start()
            await until(lambda: errors == 200, what="200 failed accepts")
            for theirs in shed:  # the pending handshakes were shed to free descriptors
                theirs.settimeout(5)
                assert theirs.recv(1024) == b""
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "Too many open files" in warnings[0].getMessage()
        assert not any(r.exc_info for r in caplog.records)
        assert listener.throttle.counts["resources"] == 200
    finally:
        listener.close()
        release.set()
        await listener.wait_closed()
        for s in shed:
            s.close()
