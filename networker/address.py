"""Multiserver-style addresses: the protocol is part of the address, so nothing is negotiated.

    tcp:HOST:PORT~noise:PEERKEY        IPv6 hosts in brackets: tcp:[::1]:4000~noise:...
    unix:PATH~noise:PEERKEY
    tcp:HOST:PORT~noise:RELAYKEY~relay:PEERKEY
                                       PEERKEY reached through the relay RELAYKEY at HOST:PORT
    ALT;ALT;...                        alternatives, tried in order

``PEERKEY`` is the peer's Ed25519 key in cobox's base32 text form; it may be left out of an
address one listens on.

A *relayed* address (:mod:`networker.relay`) reads left to right as the layers of the dial: a
TCP connection to the relay's port, a Noise session authenticated as ``RELAYKEY`` (the relay),
then a circuit through the relay to ``PEERKEY`` with its own end-to-end Noise session, which
the relay only forwards. In :class:`Address` ``peer_key`` is always the key of the device the
address reaches end to end (so every filter that keeps "alternatives naming the record's key"
treats relayed and direct addresses alike) and ``relay_key`` the relay's (``None``: direct).
A relayed address needs both keys and a ``tcp`` transport.

Each address has a *scope*: ``device`` (unix sockets, loopback), ``local`` (private and
link-local ranges) or ``public``.
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
    relay_key: bytes | None = None  # set: reach peer_key through the relay with this key at host:port

    @property
    def relayed(self) -> bool:
        return self.relay_key is not None

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
        return Address(self.transport, self.host, self.port, self.path, peer_key, self.relay_key)

    def relay_hop(self) -> Address:
        """The direct address of the relay of a relayed address (its port, its key)."""
        if self.relay_key is None:
            raise AddressError("not a relayed address")
        return Address("tcp", self.host, self.port, peer_key=self.relay_key)

    def format(self) -> str:
        if self.transport == "tcp":
            host = f"[{self.host}]" if ":" in self.host else self.host
            text = f"tcp:{host}:{self.port}"
        else:
            text = f"unix:{self.path}"
        if self.relay_key is not None:
            text += f"~noise:{encode_key(self.relay_key)}"
            if self.peer_key is not None:
                text += f"~relay:{encode_key(self.peer_key)}"
        elif self.peer_key is not None:
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
    peer_key = relay_target = None
    for proto in protocols:
        name, _, value = proto.partition(":")
        if name not in ("noise", "relay"):
            raise AddressError(f"{where}: unknown protocol {name!r} (expected 'noise' or 'relay')")
        if name == "noise" and (peer_key is not None or relay_target is not None):
            raise AddressError(f"{where}: more than one ~noise key, or ~noise after ~relay")
        if name == "relay" and (peer_key is None or relay_target is not None):
            raise AddressError(f"{where}: ~relay needs exactly one ~noise key (the relay's) before it")
        try:
            key = decode_key(value)
        except KeyEncodingError as e:
            raise AddressError(f"{where}: bad {name} key: {e}") from None
        if name == "noise":
            peer_key = key
        else:
            relay_target = key
    kind, sep, rest = transport_part.partition(":")
    if not sep:
        raise AddressError(f"{where}: missing transport (expected 'tcp:' or 'unix:')")
    if kind == "unix":
        if relay_target is not None:
            raise AddressError(f"{where}: a relay is reached over tcp only")
        if not rest or "\x00" in rest:
            raise AddressError(f"{where}: unix address without a path (or with a NUL byte)")
        return Address("unix", path=rest, peer_key=peer_key)
    if kind != "tcp":
        raise AddressError(f"{where}: unknown transport {kind!r} (expected 'tcp' or 'unix')")
    if rest.startswith("["):
        host, bracket, port_part = rest[1:].partition("]")
        if not bracket or not port_part.startswith(":"):
            raise AddressError(f"{where}: bad IPv6 host (expected [ADDR]:PORT)")
        port_text = port_part[1:]
        if not _canonical_ip(host, 6):
            raise AddressError(f"{where}: bad IPv6 host {host!r} (expected its canonical form)")
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon or not host:
            raise AddressError(f"{where}: tcp address needs HOST:PORT")
        if ":" in host:
            raise AddressError(f"{where}: IPv6 hosts must be in brackets, e.g. tcp:[::1]:4000")
        if not _valid_host(host):
            raise AddressError(f"{where}: bad host {host!r}")
    port = parse_port(port_text, where)
    if relay_target is not None:
        if relay_target == peer_key:
            raise AddressError(f"{where}: a relayed address names the relay as its own target")
        return Address("tcp", host=host, port=port, peer_key=relay_target, relay_key=peer_key)
    return Address("tcp", host=host, port=port, peer_key=peer_key)


def parse_port(text: str, where: str = "port") -> int:
    """A port in canonical decimal: ASCII digits only, no sign, no leading zero, 0-65535."""
    if not (0 < len(text) <= 5 and all(c in _DIGITS for c in text)) or (len(text) > 1 and text[0] == "0"):
        raise AddressError(f"{where}: bad port {text[:8]!r} (expected 0-65535 in ASCII digits)")
    port = int(text)
    if port > 65535:
        raise AddressError(f"{where}: bad port {text!r} (expected 0-65535)")
    return port


_DIGITS = frozenset("0123456789")
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def _canonical_ip(text: str, version: int) -> bool:
    """Whether ``text`` is an IP address of ``version`` written exactly as Python writes it (so
    no zone ids, no leading zeros, IPv6 compressed and lowercase)."""
    if not text.isascii() or "%" in text:
        return False
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    return ip.version == version and str(ip) == text


def _valid_host(host: str) -> bool:
    """An IPv4 address in dotted-quad canonical form, or a DNS name of ASCII letters, digits and
    hyphens (labels of 1-63 characters that neither start nor end with a hyphen)."""
    if not host.isascii() or len(host) > 253:
        return False
    if all(c in _DIGITS or c == "." for c in host):
        return _canonical_ip(host, 4)
    labels = host.split(".")
    return all(
        0 < len(label) <= 63 and set(label) <= _LABEL_CHARS and label[0] != "-" and label[-1] != "-"
        for label in labels
    )
