"""How a connection reaches its peer, in words: ``direct LAN``, ``direct internet``,
``hole-punched`` or ``relayed via KEY``.

An address counts as behind NAT / LAN (:func:`is_behind_nat_ip`) when it is loopback,
link-local, RFC 1918, shared address space (100.64/10) or unique-local IPv6. Other ranges that
Python calls private (documentation and benchmarking ranges such as 198.18.0.0/15) count as
internet: test networks use them for their public side.
"""

from __future__ import annotations

import ipaddress

from ..encoding import encode_key

_NAT_RANGES = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))


def is_behind_nat_ip(host: str | None) -> bool:
    """Whether ``host`` is an address only its own network can reach (``None``: a unix socket)."""
    if host is None:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_link_local or ip.is_unspecified:
        return True
    return any(ip.version == n.version and ip in n for n in _NAT_RANGES)


def connection_kind(conn: object) -> str:
    via = getattr(conn, "relay_via", None)
    if via:
        return f"relayed via {encode_key(via)[:12]}"
    if getattr(conn, "punched", False):
        return "hole-punched"
    return "direct LAN" if is_behind_nat_ip(getattr(conn, "remote_host", None)) else "direct internet"
