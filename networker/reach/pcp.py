"""A PCP client (Port Control Protocol, RFC 6887): NAT-PMP's successor, spoken by newer routers.

Theory of operation
-------------------
PCP runs on the same UDP port 5351 of the default gateway as NAT-PMP (:mod:`.natpmp`). Every
request is a 24-byte header followed by the opcode's payload::

    header:   version 2 | R=0, opcode | reserved u16 | requested lifetime u32 | client IP (16)
    MAP:      nonce (12) | protocol u8 | reserved (3) | internal port u16
              | suggested external port u16 | suggested external IP (16)

and every response a 24-byte header (version 2, R=1 and the opcode, result code, granted
lifetime, the server's epoch) and the same payload with the *assigned* port and IP. Addresses
are 16 bytes, IPv4 as IPv4-mapped IPv6 (``::ffff:a.b.c.d``). The client IP must be the source
address the router sees (the local address of a UDP socket connected to it), or the router
answers ADDRESS_MISMATCH.

- ``external_address`` has no opcode of its own in PCP: the client sends ``ANNOUNCE`` (opcode 0)
  to learn that the router speaks PCP at all, and returns the external IP learnt from the last
  mapping ("" before the first); :class:`networker.reach.portmap.PortMapper` takes the IP a
  mapping names (``Mapping.external_ip``) over it.
- ``map`` asks for a mapping with a nonce that is this client's for that (protocol, internal
  port), kept for renewals and the deletion, as RFC 6887 11.1 requires: a renewal with another
  nonce would be refused as someone else's mapping.
- ``unmap`` is a MAP with lifetime 0 (suggested port 0, same nonce).

Replies are untrusted: only a datagram from the gateway's address and port is read; it must have
the exact length, version 2, the response bit and our opcode, and for MAP our nonce, protocol
and internal port; anything else is ignored (a stray or spoofed answer cannot end the wait). A
router that speaks only NAT-PMP answers a PCP request with NAT-PMP's "unsupported version"
(version 0): that ends the wait at once with :class:`PcpError`, and the caller falls back to
NAT-PMP. A non-zero result code raises :class:`PcpError` with the RFC's meaning.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

from .natpmp import FIRST_WAIT, PORT, TCP, UDP, Mapping, NatPmpClient, NatPmpError

VERSION = 2
ANNOUNCE, MAP = 0, 1
RESPONSE = 0x80
HEADER = 24
MAP_PAYLOAD = 36
TRIES = 3  # a router silent to PCP gets NAT-PMP's tries next, on the same port: keep this wait short
PROTOCOLS = {TCP: 6, UDP: 17}  # NAT-PMP's protocol numbers (used across reach) -> IANA's
RESULTS = {1: "unsupported version", 2: "not authorized (PCP is disabled on the router)",
           3: "malformed request", 4: "unsupported opcode", 5: "unsupported option", 6: "malformed option",
           7: "network failure (the router has no external address)", 8: "out of resources",
           9: "unsupported protocol", 10: "user quota exceeded", 11: "cannot provide the external port",
           12: "address mismatch (the router sees another client address)",
           13: "excessive remote peers"}
_HEADER = struct.Struct(">BBHI16s")
_RESPONSE = struct.Struct(">BBBBII12s")
_MAP = struct.Struct(">12sB3xHH16s")
ANY_IPV4 = ipaddress.IPv6Address("::ffff:0.0.0.0").packed


class PcpError(NatPmpError):
    """The router refused or did not answer a PCP request."""

    code = "pcp_failed"


class NotPcpError(PcpError):
    """The router answered in NAT-PMP: it does not speak PCP."""


def ip16(ip: str) -> bytes:
    """``ip`` as PCP's 16 bytes (IPv4 mapped into IPv6)."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv4Address):
        return ipaddress.IPv6Address("::ffff:" + ip).packed
    return addr.packed


def ip_text(raw: bytes) -> str:
    addr = ipaddress.IPv6Address(raw)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped is not None else str(addr)


@dataclass(frozen=True, slots=True)
class MapRequest:
    nonce: bytes
    protocol: int  # TCP or UDP (NAT-PMP's numbers)
    internal: int
    external: int
    lifetime: int
    client_ip: str


def encode_announce(client_ip: str) -> bytes:
    return _HEADER.pack(VERSION, ANNOUNCE, 0, 0, ip16(client_ip))


def encode_map(r: MapRequest) -> bytes:
    if (len(r.nonce) != 12 or r.protocol not in PROTOCOLS or not 0 < r.internal < 65536
            or not 0 <= r.external < 65536 or not 0 <= r.lifetime < 2**32):
        raise ValueError("bad PCP mapping request")
    return (_HEADER.pack(VERSION, MAP, 0, r.lifetime, ip16(r.client_ip))
            + _MAP.pack(r.nonce, PROTOCOLS[r.protocol], r.internal, r.external, ANY_IPV4))


def _result(data: bytes, opcode: int, size: int) -> tuple[int, int] | None:
    """(result code, lifetime) of a response to ``opcode`` of ``size`` bytes, ``None`` if it is
    not one; raises :class:`NotPcpError` for NAT-PMP's "unsupported version" answer."""
    if len(data) >= 4 and data[0] == 0 and data[1] >= 128 and struct.unpack_from(">H", data, 2)[0] == 1:
        raise NotPcpError("the router speaks NAT-PMP, not PCP")
    if len(data) != size:
        return None
    version, op, _, code, lifetime, _, _ = _RESPONSE.unpack_from(data)
    if version != VERSION or op != RESPONSE | opcode:
        return None
    return code, lifetime


def _raise_for(code: int) -> None:
    if code:
        raise PcpError(f"PCP: {RESULTS.get(code, f'result {code}')}")


def decode_announce(data: bytes) -> bool | None:
    found = _result(data, ANNOUNCE, HEADER)
    if found is None:
        return None
    _raise_for(found[0])
    return True


def decode_map(data: bytes, r: MapRequest) -> Mapping | None:
    found = _result(data, MAP, HEADER + MAP_PAYLOAD)
    if found is None:
        return None
    nonce, protocol, internal, external, ip = _MAP.unpack_from(data, HEADER)
    if nonce != r.nonce or protocol != PROTOCOLS[r.protocol] or internal != r.internal:
        return None  # an answer to someone else's request
    code, lifetime = found
    _raise_for(code)
    return Mapping(r.protocol, internal, external, lifetime, external_ip=ip_text(ip) if r.lifetime else None)


def local_ip_towards(gateway: str) -> str:
    """This host's source address towards ``gateway`` (no packet is sent)."""
    with socket.socket(socket.AF_INET6 if ":" in gateway else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((gateway, PORT))
        return str(s.getsockname()[0])


class PcpClient(NatPmpClient):
    name = "PCP"
    error = PcpError

    def __init__(self, gateway: str, *, port: int = PORT, tries: int = TRIES, first_wait: float = FIRST_WAIT) -> None:
        super().__init__(gateway, port=port, tries=tries, first_wait=first_wait)
        self._nonces: dict[tuple[int, int], bytes] = {}
        self.external_ip = ""

    async def external_address(self) -> str:
        await self._ask(encode_announce(local_ip_towards(self.gateway)), decode_announce)
        return self.external_ip

    async def map(self, protocol: int, internal: int, external: int, lifetime: int) -> Mapping:
        nonce = self._nonces.setdefault((protocol, internal), os.urandom(12))
        r = MapRequest(nonce, protocol, internal, external, lifetime, local_ip_towards(self.gateway))
        m = await self._ask(encode_map(r), lambda d: decode_map(d, r))
        if m.external_ip:
            self.external_ip = m.external_ip
        return m

    async def unmap(self, protocol: int, internal: int) -> None:
        await self.map(protocol, internal, 0, 0)
        self._nonces.pop((protocol, internal), None)
