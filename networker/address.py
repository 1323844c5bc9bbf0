"""Multiserver-style addresses: the protocol is part of the address, so nothing is negotiated.

    tcp:HOST:PORT~noise:PEERKEY        IPv6 hosts in brackets: tcp:[::1]:4000~noise:...
    unix:PATH~noise:PEERKEY
    ALT;ALT;...                        alternatives, tried in order

``PEERKEY`` is the peer's Ed25519 key in cobox's base32 text form; it may be left out of an
address one listens on. Each address has a *scope*: ``device`` (unix sockets, loopback),
``local`` (private and link-local ranges) or ``public``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .encoding import decode_key, encode_key
from .errors import AddressError, KeyEncodingError

MAX_ADDRESS_LENGTH = 2048
MAX_ALTERNATIVES = 16


@dataclass(frozen=True, slots=True)
class Address:
    transport: str  # "tcp" | "unix"
    host: str = ""
    port: int = 0
    path: str = ""
    peer_key: bytes | None = None

    @property
    def scope(self) -> str:
        if self.transport == "unix":
            return "device"
        if self.host == "localhost":
            return "device"
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError:
            return "public"
        if ip.is_loopback:
            return "device"
        if ip.is_private or ip.is_link_local:
            return "local"
        return "public"

    def with_key(self, peer_key: bytes) -> Address:
        return Address(self.transport, self.host, self.port, self.path, peer_key)

    def format(self) -> str:
        if self.transport == "tcp":
            host = f"[{self.host}]" if ":" in self.host else self.host
            text = f"tcp:{host}:{self.port}"
        else:
            text = f"unix:{self.path}"
        if self.peer_key is not None:
            text += f"~noise:{encode_key(self.peer_key)}"
        return text

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True, slots=True)
class MultiAddress:
    alternatives: tuple[Address, ...]

    def format(self) -> str:
        return ";".join(a.format() for a in self.alternatives)

    def __str__(self) -> str:
        return self.format()

    def in_scopes(self, scopes: set[str]) -> MultiAddress:
        return MultiAddress(tuple(a for a in self.alternatives if a.scope in scopes))


def parse(text: str) -> MultiAddress:
    """Parse an address with one or more alternatives; raise :class:`AddressError` naming the
    bad part."""
    if not isinstance(text, str) or not text.strip():
        raise AddressError("empty address")
    if len(text) > MAX_ADDRESS_LENGTH:
        raise AddressError(f"address longer than {MAX_ADDRESS_LENGTH} characters")
    parts = text.strip().split(";")
    if len(parts) > MAX_ALTERNATIVES:
        raise AddressError(f"more than {MAX_ALTERNATIVES} alternatives")
    return MultiAddress(tuple(parse_one(p, n) for n, p in enumerate(parts, 1)))


def parse_one(text: str, n: int = 1) -> Address:
    where = f"alternative {n}"
    if not text:
        raise AddressError(f"{where} is empty")
    transport_part, *protocols = text.split("~")
    peer_key = None
    for proto in protocols:
        name, _, value = proto.partition(":")
        if name != "noise":
            raise AddressError(f"{where}: unknown protocol {name!r} (expected 'noise')")
        if peer_key is not None:
            raise AddressError(f"{where}: more than one ~noise key")
        try:
            peer_key = decode_key(value)
        except KeyEncodingError as e:
            raise AddressError(f"{where}: bad noise key: {e}") from None
    kind, sep, rest = transport_part.partition(":")
    if not sep:
        raise AddressError(f"{where}: missing transport (expected 'tcp:' or 'unix:')")
    if kind == "unix":
        if not rest:
            raise AddressError(f"{where}: unix address without a path")
        return Address("unix", path=rest, peer_key=peer_key)
    if kind != "tcp":
        raise AddressError(f"{where}: unknown transport {kind!r} (expected 'tcp' or 'unix')")
    if rest.startswith("["):
        host, bracket, port_part = rest[1:].partition("]")
        if not bracket or not port_part.startswith(":"):
            raise AddressError(f"{where}: bad IPv6 host (expected [ADDR]:PORT)")
        port_text = port_part[1:]
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise AddressError(f"{where}: bad IPv6 host {host!r}") from None
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon or not host:
            raise AddressError(f"{where}: tcp address needs HOST:PORT")
        if ":" in host:
            raise AddressError(f"{where}: IPv6 hosts must be in brackets, e.g. tcp:[::1]:4000")
        if not all(c.isalnum() or c in ".-" for c in host):
            raise AddressError(f"{where}: bad host {host!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise AddressError(f"{where}: bad port {port_text!r} (expected 0-65535)")
    return Address("tcp", host=host, port=int(port_text), peer_key=peer_key)
