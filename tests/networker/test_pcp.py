"""The PCP client (RFC 6887): its codec without sockets, the strictness of what it reads, and the
fall back to NAT-PMP against a router on loopback that speaks only NAT-PMP (issue 14 item 3)."""

from __future__ import annotations

import asyncio
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from networker.reach import pcp
from networker.reach.natpmp import TCP, UDP, Mapping, NatPmpClient
from networker.reach.pcp import MapRequest, NotPcpError, PcpClient, PcpError
from networker.reach.portmap import FirstAnswering, PortMapper

NONCE = bytes(range(12))
REQUEST = MapRequest(NONCE, TCP, 47100, 47100, 7200, "10.7.0.2")


def map_response(*, result: int = 0, nonce: bytes = NONCE, protocol: int = 6, internal: int = 47100,
                 external: int = 47100, ip: str = "198.18.0.1", lifetime: int = 3600, opcode: int = 0x81) -> bytes:
    return (struct.pack(">BBBBII12x", 2, opcode, 0, result, lifetime, 77)
            + struct.pack(">12sB3xHH16s", nonce, protocol, internal, external, pcp.ip16(ip)))


def test_a_map_request_is_laid_out_as_the_rfc_says():
    raw = pcp.encode_map(REQUEST)
    assert len(raw) == 60 and raw[:4] == b"\x02\x01\x00\x00" and struct.unpack_from(">I", raw, 4)[0] == 7200
    assert ipaddress.IPv6Address(raw[8:24]).ipv4_mapped == ipaddress.IPv4Address("10.7.0.2")
    assert raw[24:36] == NONCE and raw[36] == 6 and struct.unpack_from(">HH", raw, 40) == (47100, 47100)
    assert raw[44:60] == ipaddress.IPv6Address("::ffff:0.0.0.0").packed
    assert pcp.encode_announce("10.7.0.2")[:2] == b"\x02\x00" and len(pcp.encode_announce("10.7.0.2")) == 24
    with pytest.raises(ValueError):
        pcp.encode_map(MapRequest(b"short", TCP, 1, 1, 1, "10.7.0.2"))


def test_a_response_names_the_external_address_and_port():
    assert pcp.decode_map(map_response(external=40000), REQUEST) == Mapping(TCP, 47100, 40000, 3600, "198.18.0.1")
    udp = MapRequest(NONCE, UDP, 47100, 47100, 7200, "10.7.0.2")
    assert pcp.decode_map(map_response(protocol=17), udp).protocol == UDP
    assert pcp.decode_map(map_response(ip="2001:db8::5"), REQUEST).external_ip == "2001:db8::5"


@pytest.mark.parametrize("junk", [
    b"", map_response()[:-1], map_response() + b"\0", map_response(nonce=b"x" * 12), map_response(protocol=17),
    map_response(internal=47101), map_response(opcode=0x01), map_response(opcode=0x80),
    b"\x01" + map_response()[1:],
])
def test_what_is_not_our_answer_is_ignored(junk):
    """A stray or spoofed datagram (another nonce, port, protocol, opcode, length) does not end
    the wait and cannot plant another mapping."""
    assert pcp.decode_map(junk, REQUEST) is None


def test_refusals_say_what_the_router_said():
    with pytest.raises(PcpError, match="not authorized"):
        pcp.decode_map(map_response(result=2), REQUEST)
    with pytest.raises(PcpError, match="address mismatch"):
        pcp.decode_map(map_response(result=12), REQUEST)
    with pytest.raises(NotPcpError):  # NAT-PMP's "unsupported version" answer
        pcp.decode_map(struct.pack(">BBHI", 0, 129, 1, 5), REQUEST)


@given(st.binary(max_size=80))
def test_the_decoders_raise_only_their_own_error(data):
    for decode in (lambda d: pcp.decode_map(d, REQUEST), pcp.decode_announce):
        try:
            decode(data)
        except PcpError:
            pass


class NatPmpOnlyRouter(asyncio.DatagramProtocol):
    """A router on loopback that speaks NAT-PMP (RFC 6886) and answers PCP with version 0,
    "unsupported version", as RFC 6887 9 says such a router does."""

    def __init__(self) -> None:
        self.pcp_requests = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        assert self.transport is not None
        if data[:1] == b"\x02":
            self.pcp_requests += 1
            self.transport.sendto(struct.pack(">BBHI", 0, 128 + data[1], 1, 5), addr)
        elif data == b"\x00\x00":
            self.transport.sendto(struct.pack(">BBHI4s", 0, 128, 0, 5, bytes([198, 18, 0, 1])), addr)
        elif len(data) == 12:
            _, op, _, inner, outer, life = struct.unpack(">BBHHHI", data)
            self.transport.sendto(struct.pack(">BBHIHHI", 0, 128 + op, 0, 5, inner, outer, life), addr)


async def test_a_nat_pmp_router_is_told_apart_after_one_pcp_request_and_used():
    loop = asyncio.get_running_loop()
    transport, router = await loop.create_datagram_endpoint(NatPmpOnlyRouter, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        client = FirstAnswering([PcpClient("127.0.0.1", port=port, tries=3, first_wait=5.0),
                                 NatPmpClient("127.0.0.1", port=port)])
        mapper = PortMapper(client, [(TCP, 47100)])
        async with asyncio.timeout(4):  # well under PCP's first 5 s wait: the version-0 answer ended it
            await mapper.renew()
        assert mapper.name == "NAT-PMP" and mapper.tcp_address == ("198.18.0.1", 47100)
        assert router.pcp_requests == 1
    finally:
        transport.close()
