"""What kind of IP an address is, for deciding where it may be announced.

Python's ``ipaddress.is_private`` is too broad for that: it counts the benchmarking range
198.18.0.0/15 and the documentation ranges as private, though nothing stops them being routed
(the namespace tests use 198.18.0.0/15 as "the internet"). Here *private* means only the
ranges a home or office network hands out and no peer elsewhere can dial:

- IPv4: 10/8, 172.16/12, 192.168/16 (RFC 1918), 100.64/10 (carrier-grade NAT, RFC 6598);
- IPv6: fc00::/7 (unique local).

Kinds, in the order :func:`ip_kind` tests them: ``loopback``, ``unusable`` (unspecified,
multicast, reserved 240/4, broadcast), ``link-local``, ``private``, ``public``. An IPv4-mapped IPv6
address is judged by its IPv4 address.
"""

from __future__ import annotations

import ipaddress

PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(host: str) -> IP | None:
    """The IP of ``host`` (IPv4-mapped IPv6 unwrapped, zone id dropped), ``None`` if not an IP."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def ip_kind(host: str) -> str:
    """``unusable``, ``loopback``, ``link-local``, ``private``, ``public`` or ``name`` (not an IP)."""
    ip = parse_ip(host)
    if ip is None:
        return "name"
    if ip.is_loopback:  # before is_reserved, which ::1 is too
        return "loopback"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved or ip == ipaddress.IPv4Address("255.255.255.255"):
        return "unusable"
    if ip.is_link_local:
        return "link-local"
    if any(ip.version == n.version and ip in n for n in PRIVATE_NETWORKS):
        return "private"
    return "public"


def normalize_host(host: str) -> str:
    """``host`` as the plain IP text (IPv4-mapped IPv6 unwrapped); names unchanged."""
    ip = parse_ip(host)
    return str(ip) if ip is not None else host
