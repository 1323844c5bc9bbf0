"""The daemon's own addresses: what it listens on, what it tells peers to dial, and the
``HOST:PORT`` form of bootstrap nodes. Pure functions of the listen addresses (and, for wildcard
binds, of this machine's interfaces)."""

from __future__ import annotations

import ipaddress

import psutil

from networker import Address
from networker import parse_address as parse

MAX_ADVERTISED = 8


def tcp_listen(listen_addresses: list[str]) -> list[Address]:
    """Every TCP alternative of the addresses the node listens on."""
    return [alt for text in listen_addresses for alt in parse(text).alternatives if alt.transport == "tcp"]


def advertised(listen_addresses: list[str]) -> list[str]:
    """The addresses peers can dial: wildcard binds expanded to this machine's addresses."""
    out: list[str] = []
    for text in listen_addresses:
        for alt in parse(text).alternatives:
            if alt.transport == "tcp" and alt.host in ("0.0.0.0", "::"):
                for ip in local_ips(v6=alt.host == "::"):
                    out.append(Address("tcp", host=ip, port=alt.port, peer_key=alt.peer_key).format())
            else:
                out.append(alt.format())
    # Dial the most local first: a peer on this machine or network need not go further.
    order = {"device": 0, "local": 1, "public": 2}
    return sorted(out, key=lambda a: order[parse(a).alternatives[0].scope])[:MAX_ADVERTISED]


def lan_interfaces(listen_addresses: list[str]) -> list[str] | None:
    """The interfaces LAN discovery is limited to: the loopback hosts when the node listens on
    loopback only, else None (every interface)."""
    hosts = {a.host for a in tcp_listen(listen_addresses)}
    if hosts and all(ipaddress.ip_address(h).is_loopback for h in hosts if is_ip(h)):
        return sorted(hosts)
    return None


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) of a bootstrap node."""
    host, _, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ValueError(f"bad bootstrap address {text!r} (expected HOST:PORT)")
    return host, int(port)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def local_ips(v6: bool) -> list[str]:
    ips = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family.name == ("AF_INET6" if v6 else "AF_INET"):
                ip = a.address.split("%")[0]
                if v6 and ipaddress.ip_address(ip).is_link_local:
                    continue
                ips.append(ip)
    return ips or (["::1"] if v6 else ["127.0.0.1"])
