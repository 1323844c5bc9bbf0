"""Item 1 of issue 14 on real sockets: dual-stack listening, dials that leave from the listening
port (so a port-keeping NAT maps both to one public port), and no silent port sharing."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from networker import transport
from networker.address import Address, parse
from networker.identity import DeviceIdentity

A, B = DeviceIdentity.generate(), DeviceIdentity.generate()


async def _listen(identity: DeviceIdentity, host: str, port: int = 0):
    accepted: asyncio.Queue[transport.SecureConnection] = asyncio.Queue()

    async def on_connection(conn: transport.SecureConnection) -> None:
        await accepted.put(conn)

    listener = await transport.listen(Address("tcp", host=host, port=port), identity, on_connection)
    return listener, accepted


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def test_dials_leave_from_the_listening_port():
    la, accepted = await _listen(A, "127.0.0.1")
    lb, _ = await _listen(B, "127.0.0.1")
    try:
        assert lb.tcp_port
        target = parse(Address("tcp", host="127.0.0.1", port=la.tcp_port, peer_key=A.peer_id).format())
        async with asyncio.timeout(10):
            conn = await transport.dial(target, B, bind_port=lb.tcp_port)
            seen = await accepted.get()
        assert seen.remote_address == f"tcp:127.0.0.1:{lb.tcp_port}"  # A sees B's listening port
        assert conn.local_address == f"tcp:127.0.0.1:{lb.tcp_port}"
        # A second dial to the same peer cannot use the same 4-tuple: it falls back silently.
        async with asyncio.timeout(10):
            again = await transport.dial(target, B, bind_port=lb.tcp_port)
            seen2 = await accepted.get()
        assert seen2.remote_address != seen.remote_address
        for c in (conn, again, seen, seen2):
            c.close()
    finally:
        la.close()
        lb.close()


async def test_a_second_listener_on_a_taken_port_is_refused():
    la, _ = await _listen(A, "127.0.0.1")
    try:
        with pytest.raises(OSError) as info:
            await _listen(B, "127.0.0.1", la.tcp_port)
        assert info.value.errno == errno.EADDRINUSE
    finally:
        la.close()


async def test_wildcard_listen_is_dual_stack():
    if not _has_ipv6():
        pytest.skip("this machine has no IPv6 loopback: dual-stack cannot be shown")
    la, accepted = await _listen(A, "::")
    try:
        assert la.dual_stack and len(la.addresses) == 1
        for host in ("127.0.0.1", "::1"):
            target = parse(Address("tcp", host=host, port=la.tcp_port, peer_key=A.peer_id).format())
            async with asyncio.timeout(10):
                conn = await transport.dial(target, B)
                seen = await accepted.get()
            assert seen.remote_host == host  # IPv4 peers are not shown as ::ffff:127.0.0.1
            conn.close()
            seen.close()
    finally:
        la.close()
