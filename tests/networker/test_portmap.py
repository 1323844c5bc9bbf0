"""NAT-PMP and UPnP-IGD codecs and the port mapper's renew/remove cycle, without sockets (issue 14 item 3)."""

from __future__ import annotations

import struct

import pytest

from networker.reach import natpmp, upnp
from networker.reach.natpmp import TCP, UDP, Mapping, NatPmpError
from networker.reach.portmap import MIN_RENEW, RETRY, FirstAnswering, PortMapper
from networker.reach.upnp import UpnpError


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
    name = "fake"

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


# -- UPnP-IGD parsing (what a hostile LAN device could send) -------------------------------------

DESCRIPTION = b"""<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><device><deviceList>
<device><serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<controlURL>/ctl/IPConn</controlURL></service></serviceList></device></deviceList></device></root>"""


def test_ssdp_answers_must_point_at_their_sender():
    reply = b"HTTP/1.1 200 OK\r\nST: x\r\nLOCATION: http://10.7.0.1:5000/rootDesc.xml\r\n\r\n"
    assert upnp.parse_search_reply(reply, "10.7.0.1") == "http://10.7.0.1:5000/rootDesc.xml"
    assert upnp.parse_search_reply(reply, "10.7.0.66") is None  # another host answering for the router
    assert upnp.parse_search_reply(reply.replace(b"http:", b"file:"), "10.7.0.1") is None
    assert upnp.parse_search_reply(b"NOTIFY * HTTP/1.1\r\n\r\n", "10.7.0.1") is None
    assert upnp.parse_search_reply(reply + b"x" * 5000, "10.7.0.1") is None


def test_description_gives_the_control_url_on_the_same_host_only():
    loc = "http://10.7.0.1:5000/rootDesc.xml"
    svc = upnp.parse_description(DESCRIPTION, loc)
    assert svc.control_url == "http://10.7.0.1:5000/ctl/IPConn" and "WANIPConnection" in svc.service_type
    elsewhere = DESCRIPTION.replace(b"/ctl/IPConn", b"http://198.18.0.9/steal")
    with pytest.raises(UpnpError, match="another host"):
        upnp.parse_description(elsewhere, loc)
    for bad in (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><root>&a;</root>', b"<root", b"<root/>" + b" " * 70000,
                DESCRIPTION.replace(b"WANIPConnection", b"Layer3Forwarding")):
        with pytest.raises(UpnpError):
            upnp.parse_description(bad, loc)


def test_soap_answers_and_errors():
    ok = (b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
          b'<u:GetExternalIPAddressResponse xmlns:u="x"><NewExternalIPAddress>198.18.0.1</NewExternalIPAddress>'
          b'</u:GetExternalIPAddressResponse></s:Body></s:Envelope>')
    assert upnp.parse_soap_reply(200, ok, "GetExternalIPAddress") == {"NewExternalIPAddress": "198.18.0.1"}
    fault = b"<Envelope><Body><Fault><detail><UPnPError><errorCode>718</errorCode><errorDescription>" \
            b"ConflictInMappingEntry</errorDescription></UPnPError></detail></Fault></Body></Envelope>"
    with pytest.raises(UpnpError, match="718 ConflictInMappingEntry"):
        upnp.parse_soap_reply(500, fault, "AddPortMapping")
    body = upnp.soap_body("urn:x", "AddPortMapping", {"NewPortMappingDescription": "<co&box>"})
    assert b"&lt;co&amp;box&gt;" in body


async def test_first_answering_protocol_is_used_and_dropped_when_it_fails():
    dead, alive = FakeRouter(), FakeRouter()
    dead.up, dead.name, alive.name = False, "NAT-PMP", "UPnP-IGD"
    both = FirstAnswering([dead, alive])
    mapper = PortMapper(both, [(TCP, 47100)])
    await mapper.renew()
    assert mapper.name == "UPnP-IGD" and alive.calls and not dead.calls
    alive.up = False
    await mapper.renew()
    assert mapper.state == "failed" and "NAT-PMP" in mapper.error and "UPnP-IGD" in mapper.error


def test_a_dtd_hidden_in_another_encoding_is_refused():
    """The DTD check looks at bytes: a UTF-16 body hides ``<!DOCTYPE``/``<!ENTITY`` from it and
    expat would expand its entities. Only UTF-8 bodies are read."""
    import pytest

    from networker.reach.upnp import UpnpError, _xml

    bomb = ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><r>&b;</r>')
    for body in (bomb.encode("utf-16"), bomb.encode("utf-16-le"), bomb.replace("UTF-16", "UTF-8").encode()):
        with pytest.raises(UpnpError, match="refused"):
            _xml(body, "description")
    assert _xml(b'<?xml version="1.0" encoding="utf-8"?><root><a>1</a></root>', "description").tag == "root"
