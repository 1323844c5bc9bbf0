"""NAT-PMP codec and the port mapper's renew/remove cycle, without sockets (issue 14 item 3)."""

from __future__ import annotations

import struct

import pytest

from networker.reach import natpmp
from networker.reach.natpmp import TCP, UDP, Mapping, NatPmpError
from networker.reach.portmap import MIN_RENEW, RETRY, PortMapper


def map_reply(op: int, result: int, inner: int, outer: int, lifetime: int) -> bytes:
    return struct.pack(">BBHIHHI", 0, 128 + op, result, 1, inner, outer, lifetime)


def test_codec_round_trips_and_ignores_what_is_not_a_reply():
    assert natpmp.encode_map_request(TCP, 47100, 47100, 7200) == struct.pack(">BBHHHI", 0, 2, 0, 47100, 47100, 7200)
    assert natpmp.decode_address_reply(struct.pack(">BBHI4s", 0, 128, 0, 5, bytes([198, 18, 0, 1]))) == "198.18.0.1"
    reply = map_reply(TCP, 0, 47100, 40000, 3600)
    assert natpmp.decode_map_reply(reply, TCP, 47100) == Mapping(TCP, 47100, 40000, 3600)
    for junk in (b"", b"\x00" * 15, map_reply(UDP, 0, 47100, 1, 1), map_reply(TCP, 0, 47101, 1, 1),
                 b"\x01" + map_reply(TCP, 0, 47100, 1, 1)[1:], map_reply(TCP, 0, 47100, 1, 1) + b"\x00"):
        assert natpmp.decode_map_reply(junk, TCP, 47100) is None
    with pytest.raises(NatPmpError, match="no external address"):
        natpmp.decode_map_reply(map_reply(TCP, 3, 47100, 0, 0), TCP, 47100)
    with pytest.raises(ValueError):
        natpmp.encode_map_request(3, 1, 1, 1)


def test_default_gateway_from_the_route_table(tmp_path):
    table = tmp_path / "route"
    table.write_text("Iface\tDestination\tGateway\tFlags\n"
                     "eth0\t0000070A\t00000000\t0001\n"
                     "eth0\t00000000\t0100070A\t0003\n")
    assert natpmp.default_gateway(table) == "10.7.0.1"
    table.write_text("Iface\tDestination\tGateway\tFlags\n")
    assert natpmp.default_gateway(table) is None


class FakeRouter:
    def __init__(self, grant: int | None = None) -> None:
        self.grant = grant
        self.up = True
        self.calls: list[tuple[int, int, int, int]] = []
        self.removed: list[tuple[int, int]] = []

    async def external_address(self) -> str:
        if not self.up:
            raise NatPmpError("no NAT-PMP answer from the router 10.7.0.1")
        return "198.18.0.1"

    async def map(self, protocol: int, internal: int, external: int, lifetime: int) -> Mapping:
        self.calls.append((protocol, internal, external, lifetime))
        granted = internal + 1000 if external == internal else external  # the port asked for is taken
        return Mapping(protocol, internal, granted, self.grant or lifetime)

    async def unmap(self, protocol: int, internal: int) -> None:
        self.removed.append((protocol, internal))


async def test_mapped_renewed_before_expiry_and_removed_at_stop():
    router = FakeRouter(grant=600)  # the router shortens the lifetime asked for
    seen: list[object] = []
    mapper = PortMapper(router, [(TCP, 47100), (UDP, 47100)], on_change=seen.append)
    assert await mapper.renew() == 300  # half the granted lifetime
    assert mapper.state == "mapped" and seen == [("198.18.0.1", 48100)]
    assert router.calls == [(TCP, 47100, 47100, 7200), (UDP, 47100, 47100, 7200)]
    assert await mapper.renew() == 300  # renewal keeps the external port granted
    assert router.calls[2:] == [(TCP, 47100, 48100, 7200), (UDP, 47100, 48100, 7200)]
    assert seen == [("198.18.0.1", 48100)]  # unchanged: not told again
    await mapper.stop()
    assert router.removed == [(TCP, 47100), (UDP, 47100)] and mapper.state == "stopped"


async def test_a_tiny_lifetime_does_not_make_a_busy_loop():
    mapper = PortMapper(FakeRouter(grant=2), [(TCP, 47100)])
    assert await mapper.renew() == MIN_RENEW


async def test_a_router_without_nat_pmp_is_retried_with_backoff_and_said():
    router = FakeRouter()
    seen: list[object] = []
    mapper = PortMapper(router, [(TCP, 47100)], on_change=seen.append)
    await mapper.renew()
    router.up = False
    assert await mapper.renew() == RETRY
    assert await mapper.renew() == 2 * RETRY
    assert mapper.state == "failed" and "no NAT-PMP answer" in mapper.status()["error"]
    assert seen == [("198.18.0.1", 48100), None]  # the mapping is no longer announced
    router.up = True
    await mapper.renew()
    assert mapper.state == "mapped" and mapper.failures == 0
    with pytest.raises(RuntimeError):
        mapper._to("idle")
