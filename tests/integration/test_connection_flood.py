"""A daemon under a 1,024 file descriptor limit and 1,500 raw TCP connections that never
handshake (issue 12, item 6): the log stays small, an honest peer still connects and
replicates, the control API still answers."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import socket
import sys
from pathlib import Path

import pytest

from cobox.config import connection_limits
from cobox.errors import ConfigError
from cobox.settings import Config
from tests.integration.daemons import ok
from tests.integration.test_cli import log_becomes

NOFILE = 1024
FLOOD = 1500
SOURCES = [f"127.0.0.{i}" for i in range(2, 32)]  # 30 source IPs, 50 connections each
LIMIT_WRAPPER = [sys.executable, "-c",
                 "import os, resource, sys; "
                 f"resource.setrlimit(resource.RLIMIT_NOFILE, ({NOFILE}, {NOFILE})); "
                 "os.execv(sys.argv[1], sys.argv[1:])"]


def open_files_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open files limit in /proc")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def still_open(sock: socket.socket) -> bool:
    """Whether the daemon has not closed its end (we never sent anything)."""
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


async def flood(port: int, sockets: list[socket.socket]) -> int:
    """Open ``FLOOD`` connections to 127.0.0.1:``port`` (none says a word); the number that
    connected."""
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(200)

    async def one(i: int) -> bool:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sockets.append(sock)
        sock.setblocking(False)
        sock.bind((SOURCES[i % len(SOURCES)], 0))
        async with limit:
            try:
                async with asyncio.timeout(20):
                    await loop.sock_connect(sock, ("127.0.0.1", port))
                return True
            except (OSError, TimeoutError):
                return False

    return sum(await asyncio.gather(*(one(i) for i in range(FLOOD))))


async def test_raw_connection_flood_under_a_1024_fd_limit(daemons):
    a = await daemons("a", wrap=LIMIT_WRAPPER)
    assert a.proc is not None
    pid = a.proc.pid
    assert open_files_limit(pid) == NOFILE
    b = await daemons("b")
    uri = (await ok(a.home, "group", "create", "g")).strip()
    await ok(b.home, "group", "join", uri)
    address = await a.address()
    port = int(address.split("~")[0].rsplit(":", 1)[1])
    lines_before = len(a.output)

    sockets: list[socket.socket] = []
    try:
        connected = await flood(port, sockets)
        assert connected > NOFILE, f"only {connected} connections: not a flood that exhausts the fds"
        # The honest peer connects and replicates while the flood holds its sockets open.
        await ok(b.home, "peers", "add", address)
        await ok(a.home, "log", "append", "g", "through the flood")
        await ok(b.home, "sync", "wait", "g", "--timeout", "30")
        assert await log_becomes(b.home, ["through the flood"]) == ["through the flood"]
        # The API answers, the daemon holds few of the flood's sockets and few fds.
        status = await a.status()
        assert len(status["peers"]) == 1
        # (Sockets the kernel could not queue look connected from our side but hold no fd of
        # the daemon, so count the daemon's fds.)
        fds = open_fds(pid)
        print(f"flood: {connected} connected, {sum(still_open(s) for s in sockets)} look open, daemon fds {fds}")
        assert fds < NOFILE // 4
    finally:
        for s in sockets:
            s.close()
    await a.stop()
    log = a.output[lines_before:]
    print(f"flood: {len(log)} log lines during the flood and shutdown")
    assert not any("Traceback" in line for line in log), "".join(log[:40])
    assert not any(str(errno.EMFILE) in line and "Errno" in line for line in log)
    assert len(log) <= 20, f"{len(log)} log lines:\n" + "".join(log[:40])


def test_the_limits_come_from_the_network_settings():
    net = Config().network
    made = connection_limits(net)
    assert made["limits"].max_pending == net.max_pending and made["limits"].idle_timeout == net.idle_timeout
    assert made["penalties"].cap == net.refuse_max_seconds
    with pytest.raises(ConfigError, match="network"):
        connection_limits(dataclasses.replace(net, group_reserve=1.5))
