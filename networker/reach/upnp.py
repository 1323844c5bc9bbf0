"""A UPnP-IGD client: find the router's WAN connection service and ask it to forward a port.

Theory of operation
-------------------
1. SSDP: an ``M-SEARCH`` for ``InternetGatewayDevice`` to 239.255.255.250:1900; every answer
   within :data:`SEARCH_TIME` seconds is read. An answer's ``LOCATION`` is used only if it is
   ``http://`` to the IP the answer came from (anything on the LAN can answer SSDP; it must not
   make us fetch from elsewhere).
2. The device description (HTTP GET, at most :data:`MAX_BODY` bytes, no DTD or entities: the
   XML is refused if it has any) names a ``WANIPConnection`` or ``WANPPPConnection`` service
   and its control URL, which must be on the same host.
3. SOAP calls on it: ``GetExternalIPAddress``, ``AddPortMapping`` (for our LAN address, which
   routers in secure mode require to be the caller's), ``DeletePortMapping``.

The parsing functions are pure; :class:`UpnpClient` (the asyncio shell, with aiohttp) offers the
same calls as the NAT-PMP client so :class:`networker.reach.portmap.PortMapper` can use either.
Every failure is an :class:`UpnpError`.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape

import aiohttp

from ..errors import NetworkError
from .natpmp import TCP, Mapping
from .scope import ip_kind

SSDP = ("239.255.255.250", 1900)
SEARCH_TIME = 2.0
HTTP_TIMEOUT = 5.0
MAX_BODY = 64 * 1024
TARGETS = ("urn:schemas-upnp-org:device:InternetGatewayDevice:1",
           "urn:schemas-upnp-org:device:InternetGatewayDevice:2")
SERVICES = ("urn:schemas-upnp-org:service:WANIPConnection:", "urn:schemas-upnp-org:service:WANPPPConnection:")


class UpnpError(NetworkError):
    """The router has no usable UPnP-IGD service, or refused a request."""

    code = "upnp_failed"


@dataclass(frozen=True, slots=True)
class Service:
    service_type: str
    control_url: str


def search_request(target: str) -> bytes:
    return (f"M-SEARCH * HTTP/1.1\r\nHOST: {SSDP[0]}:{SSDP[1]}\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\n"
            f"ST: {target}\r\n\r\n").encode()


def parse_search_reply(data: bytes, source_ip: str) -> str | None:
    """The description URL of an SSDP answer, if it is one and points at its sender."""
    if len(data) > 4096:
        return None
    lines = data.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 200"):
        return None
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:]) if k}
    location = headers.get("location", "")
    return location if _same_host(location, source_ip) else None


def _same_host(url: str, ip: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
        return parts.scheme == "http" and parts.hostname == ip and ip_kind(ip) in ("private", "public", "loopback")
    except ValueError:
        return False


def _xml(body: bytes, what: str) -> ET.Element:
    if len(body) > MAX_BODY:
        raise UpnpError(f"UPnP {what}: too large")
    try:  # a DTD check on bytes means nothing in another encoding (UTF-16 has NULs, or a BOM)
        if b"\0" in body:
            raise UnicodeDecodeError("utf-8", body, 0, 1, "a NUL byte")
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise UpnpError(f"UPnP {what}: not UTF-8 (refused)") from None
    if b"ENCODING=" in body[:200].upper() and not any(
            e in body[:200].upper() for e in (b'ENCODING="UTF-8"', b"ENCODING='UTF-8'")):
        raise UpnpError(f"UPnP {what}: not UTF-8 (refused)")
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise UpnpError(f"UPnP {what}: has a DTD (refused)")
    try:
        return ET.fromstring(body)
    except ET.ParseError as e:
        raise UpnpError(f"UPnP {what}: not XML ({e})") from None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_description(body: bytes, location: str) -> Service:
    """The WAN connection service of a device description fetched from ``location``."""
    root = _xml(body, "device description")
    base = location
    for el in root.iter():
        if _local(el.tag) == "URLBase" and el.text:
            base = el.text.strip()
    for el in root.iter():
        if _local(el.tag) != "service":
            continue
        fields = {_local(c.tag): (c.text or "").strip() for c in el}
        kind = fields.get("serviceType", "")
        if kind.startswith(SERVICES) and fields.get("controlURL"):
            url = urllib.parse.urljoin(base, fields["controlURL"])
            host = urllib.parse.urlsplit(location).hostname or ""
            if not _same_host(url, host):
                raise UpnpError("UPnP control URL is on another host (refused)")
            return Service(kind, url)
    raise UpnpError("the router's UPnP device has no WAN connection service")


def soap_body(service_type: str, action: str, args: dict[str, str]) -> bytes:
    inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in args.items())
    return (f'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
            f's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
            f'<u:{action} xmlns:u="{service_type}">{inner}</u:{action}></s:Body></s:Envelope>').encode()


def parse_soap_reply(status: int, body: bytes, action: str) -> dict[str, str]:
    """The out-arguments of a SOAP answer; raises :class:`UpnpError` with the router's error."""
    root = _xml(body, f"{action} answer")
    if status != 200:
        code = next((el.text for el in root.iter() if _local(el.tag) == "errorCode"), None)
        desc = next((el.text for el in root.iter() if _local(el.tag) == "errorDescription"), None)
        raise UpnpError(f"UPnP {action} refused: {code or status} {desc or ''}".strip())
    for el in root.iter():
        if _local(el.tag) == f"{action}Response":
            return {_local(c.tag): (c.text or "").strip()[:100] for c in el}
    raise UpnpError(f"UPnP {action}: no response element")


class _Search(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.found: asyncio.Queue[str] = asyncio.Queue(maxsize=16)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        location = parse_search_reply(data, addr[0])
        if location is not None and not self.found.full():
            self.found.put_nowait(location)


class UpnpClient:
    name = "UPnP-IGD"

    def __init__(self, *, search_time: float = SEARCH_TIME) -> None:
        self.search_time = search_time
        self.service: Service | None = None
        self.local_ip: str | None = None
        self._external: dict[tuple[int, int], int] = {}

    async def _discover(self) -> Service:
        if self.service is not None:
            return self.service
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(_Search, family=socket.AF_INET)
        try:
            for target in TARGETS:
                transport.sendto(search_request(target), SSDP)
            async with asyncio.timeout(self.search_time):
                location = await proto.found.get()
        except TimeoutError:
            raise UpnpError("no UPnP-IGD router answered") from None
        finally:
            transport.close()
        body = await self._http("GET", location, None, {})
        self.service = parse_description(body[1], location)
        self.local_ip = _source_ip(urllib.parse.urlsplit(location).hostname or "")
        return self.service

    async def _http(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT)) as session,
                        session.request(method, url, data=data, headers=headers, allow_redirects=False) as r):
                body = b""
                while len(body) <= MAX_BODY and (chunk := await r.content.read(MAX_BODY + 1 - len(body))):
                    body += chunk
                return r.status, body
        except (aiohttp.ClientError, TimeoutError) as e:
            raise UpnpError(f"UPnP request to the router failed: {e}") from None

    async def _call(self, action: str, args: dict[str, str]) -> dict[str, str]:
        service = await self._discover()
        headers = {"Content-Type": 'text/xml; charset="utf-8"', "SOAPAction": f'"{service.service_type}#{action}"'}
        status, body = await self._http("POST", service.control_url, soap_body(service.service_type, action, args),
                                        headers)
        return parse_soap_reply(status, body, action)

    async def external_address(self) -> str:
        ip = (await self._call("GetExternalIPAddress", {})).get("NewExternalIPAddress", "")
        if ip_kind(ip) in ("name", "unusable"):
            raise UpnpError(f"UPnP: the router gave no external address ({ip[:40]!r})")
        return ip

    async def map(self, protocol: int, internal: int, external: int, lifetime: int) -> Mapping:
        await self._discover()
        name = "TCP" if protocol == TCP else "UDP"
        await self._call("AddPortMapping", {
            "NewRemoteHost": "", "NewExternalPort": str(external or internal), "NewProtocol": name,
            "NewInternalPort": str(internal), "NewInternalClient": self.local_ip or "", "NewEnabled": "1",
            "NewPortMappingDescription": "cobox", "NewLeaseDuration": str(min(lifetime, 86399))})
        self._external[(protocol, internal)] = external or internal
        return Mapping(protocol, internal, external or internal, lifetime)

    async def unmap(self, protocol: int, internal: int) -> None:
        external = self._external.pop((protocol, internal), internal)
        await self._call("DeletePortMapping", {"NewRemoteHost": "", "NewExternalPort": str(external),
                                               "NewProtocol": "TCP" if protocol == TCP else "UDP"})


def _source_ip(router: str) -> str | None:
    """Our address on the way to ``router`` (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((router, 1900))
            return str(s.getsockname()[0])
    except OSError:
        return None
