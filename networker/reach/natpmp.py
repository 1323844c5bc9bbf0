"""A NAT-PMP client (RFC 6886): ask the home router to forward a port to us.

Theory of operation
-------------------
NAT-PMP is two UDP requests to the default gateway, port 5351:

- external address: ``[version 0, op 0]`` -> ``[0, 128, result u16, epoch u32, ip 4 bytes]``;
- mapping: ``[0, op 1 (UDP) | 2 (TCP), 0 u16, internal port u16, suggested external port u16,
  lifetime u32]`` -> ``[0, 128 + op, result u16, epoch u32, internal port u16, external port
  u16, lifetime u32]``. Lifetime 0 (and external port 0) deletes the mapping.

Requests are sent again after 250 ms, doubling, :data:`TRIES` times (RFC 6886 3.1 allows up to
9; a router that has not answered in ~4 s has no NAT-PMP). Replies are untrusted: only a datagram
from the gateway's address and port 5351 is read, of the exact length, version and op, else it
is ignored; a non-zero result code raises :class:`NatPmpError` with the RFC's meaning. The codec
functions are pure; :class:`NatPmpClient` is the asyncio shell.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..errors import NetworkError

T = TypeVar("T")
PORT = 5351
TRIES = 5
FIRST_WAIT = 0.25
UDP, TCP = 1, 2
RESULTS = {1: "unsupported version", 2: "not authorized (NAT-PMP is disabled on the router)",
           3: "network failure (the router has no external address)", 4: "out of resources",
           5: "unsupported operation"}


class NatPmpError(NetworkError):
    """The router refused or did not answer a NAT-PMP request."""

    code = "natpmp_failed"


@dataclass(frozen=True, slots=True)
class Mapping:
    protocol: int       # UDP or TCP
    internal_port: int
    external_port: int
    lifetime: int       # seconds the router keeps it
    external_ip: str | None = None  # the external IP, when the protocol names it per mapping (PCP)


def encode_address_request() -> bytes:
    return b"\x00\x00"


def encode_map_request(protocol: int, internal: int, external: int, lifetime: int) -> bytes:
    if protocol not in (UDP, TCP) or not 0 < internal < 65536 or not 0 <= external < 65536 or lifetime < 0:
        raise ValueError("bad NAT-PMP mapping request")
    return struct.pack(">BBHHHI", 0, protocol, 0, internal, external, lifetime)


def _result(data: bytes, op: int, size: int) -> int | None:
    """The result code of a reply to ``op`` of ``size`` bytes, ``None`` if it is not one."""
    if len(data) != size or data[0] != 0 or data[1] != 128 + op:
        return None
    return int(struct.unpack_from(">H", data, 2)[0])


def decode_address_reply(data: bytes) -> str | None:
    """The external IPv4 address, ``None`` if ``data`` is no such reply; raises
    :class:`NatPmpError` for a refusal."""
    code = _result(data, 0, 12)
    if code is None:
        return None
    if code:
        raise NatPmpError(f"NAT-PMP: {RESULTS.get(code, f'result {code}')}")
    return str(ipaddress.IPv4Address(data[8:12]))


def decode_map_reply(data: bytes, protocol: int, internal: int) -> Mapping | None:
    code = _result(data, protocol, 16)
    if code is None:
        return None
    if code:
        raise NatPmpError(f"NAT-PMP: {RESULTS.get(code, f'result {code}')}")
    inner, outer, lifetime = struct.unpack_from(">HHI", data, 8)
    if inner != internal:
        return None
    return Mapping(protocol, inner, outer, lifetime)


def default_gateway(route_table: Path = Path("/proc/net/route")) -> str | None:
    """The IPv4 default gateway from Linux's routing table, ``None`` if there is none."""
    try:
        lines = route_table.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "00000000" and fields[2] != "00000000":
            return str(ipaddress.IPv4Address(struct.pack("<I", int(fields[2], 16))))
    return None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, source: tuple[str, int]) -> None:
        self.source = source
        self.replies: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        if addr[:2] == self.source and not self.replies.full():
            self.replies.put_nowait(data)


class NatPmpClient:
    name = "NAT-PMP"
    error: type[NatPmpError] = NatPmpError

    def __init__(self, gateway: str, *, port: int = PORT, tries: int = TRIES, first_wait: float = FIRST_WAIT) -> None:
        self.gateway = gateway
        self.port = port
        self.tries = tries
        self.first_wait = first_wait

    async def _ask(self, request: bytes, decode: Callable[[bytes], T | None]) -> T:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _Protocol((self.gateway, self.port)), family=socket.AF_INET)
        try:
            wait = self.first_wait
            for _ in range(self.tries):
                transport.sendto(request, (self.gateway, self.port))
                deadline = loop.time() + wait
                while (left := deadline - loop.time()) > 0:
                    try:
                        data = await asyncio.wait_for(proto.replies.get(), left)
                    except TimeoutError:
                        break
                    answer = decode(data)
                    if answer is not None:
                        return answer
                wait *= 2
        finally:
            transport.close()
        raise self.error(f"no {self.name} answer from the router {self.gateway}")

    async def external_address(self) -> str:
        return await self._ask(encode_address_request(), decode_address_reply)

    async def map(self, protocol: int, internal: int, external: int, lifetime: int) -> Mapping:
        return await self._ask(encode_map_request(protocol, internal, external, lifetime),
                               lambda d: decode_map_reply(d, protocol, internal))

    async def unmap(self, protocol: int, internal: int) -> None:
        await self.map(protocol, internal, 0, 0)
