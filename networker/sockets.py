"""Sockets for peer connections, below Noise: how listening sockets are bound and how a dial
leaves from the listening port.

- ``tcp:[::]:PORT`` (or an empty host) listens dual-stack: one IPv6 socket with IPV6_V6ONLY off
  that takes IPv4 peers too (seen as ``::ffff:a.b.c.d``; :mod:`networker.transport` shows them
  as plain IPv4), or an IPv4 socket where the system has no IPv6;
- listening TCP sockets carry SO_REUSEADDR and SO_REUSEPORT, so an outgoing connection can be
  bound to the same port before it connects (:func:`open_tcp`): a NAT that keeps ports then maps
  our dials and our listening port alike, and a peer that sees the dial learns the port to dial
  back. Where that bind or connect fails (no SO_REUSEPORT, the 4-tuple already in use), the dial
  falls back silently to a port the kernel picks;
- before binding a fixed port, a probe without SO_REUSEPORT checks that nobody else listens on
  it, so a second daemon cannot share the port silently;
- unix sockets are made 0600 (umask while binding) and a stale socket file is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from pathlib import Path

BACKLOG = 128


def _reusing_socket(family: int, bind_port: int) -> socket.socket | None:
    """A TCP socket bound to ``bind_port`` on the wildcard address of ``family``, with
    SO_REUSEADDR and SO_REUSEPORT, so an outgoing connection leaves from the port this node
    listens on (a NAT that keeps ports then maps it to the same public port, and peers that see
    it learn the port to dial back); ``None`` where the system refuses (then the kernel picks)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        return None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", bind_port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        return None
    return sock


async def open_tcp(host: str, port: int, bind_port: int | None
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection``, from ``bind_port`` where that works (falling back silently
    to a port the kernel picks: the port may be in use by a connection to the same peer)."""
    if bind_port:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        for family, _, _, _, sockaddr in infos[:1]:
            sock = _reusing_socket(family, bind_port)
            if sock is None:
                break
            try:
                await loop.sock_connect(sock, sockaddr)
            except OSError as e:
                sock.close()
                if e.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                    raise
                break
            return await asyncio.open_connection(sock=sock)
    return await asyncio.open_connection(host, port)


def _check_port_free(family: int, sockaddr: tuple[object, ...]) -> None:
    """Raise ``EADDRINUSE`` if another program listens on the port: listening sockets carry
    SO_REUSEPORT (so dials can leave from the same port), which would otherwise let a second
    daemon of the same user share the port silently."""
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if sockaddr[0] == "::" else 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(sockaddr)
    finally:
        probe.close()


def _bind_listening(family: int, sockaddr: tuple[object, ...], dual: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual else 1)
        if sockaddr[1]:
            _check_port_free(family, sockaddr)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def tcp_sockets(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for ``host``: ``::`` (or an empty host) is dual-stack, one IPv6 socket
    that takes IPv4 too (an IPv4 socket where the system has no IPv6); other hosts get one
    socket per address they resolve to."""
    if host in ("", "::"):
        try:
            return [_bind_listening(socket.AF_INET6, ("::", port), dual=True)]
        except OSError as e:
            if e.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT):
                raise
            return [_bind_listening(socket.AF_INET, ("0.0.0.0", port), dual=False)]
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, _, _, _, sockaddr in infos:
            if (family, sockaddr) in seen:
                continue
            seen.add((family, sockaddr))
            sockets.append(_bind_listening(family, sockaddr, dual=False))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def unix_socket(path: Path) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        if path.is_socket():
            path.unlink()  # a stale socket of a previous run
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock
