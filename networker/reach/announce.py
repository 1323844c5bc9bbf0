"""Which of this device's addresses go where. Pure.

The DHT is read by anyone anywhere, so it gets only addresses somebody elsewhere can dial:

1. addresses a peer dialled back (:mod:`networker.reach.observed`), first;
2. the router's port mapping (UPnP / NAT-PMP), if there is one;
3. public interface addresses (a global IPv6 address, a public IPv4 address on an interface);
4. what other mechanisms add (relayed addresses: ``extra``);
5. loopback addresses, only with ``allow_loopback`` (tests, single-machine setups).

Never link-local, never private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7):
peers on the same LAN learn those through mDNS, which announces the interface address it sends
from. At most :data:`MAX_ANNOUNCED` addresses, in that order, without duplicates.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..address import Address
from .scope import ip_kind

MAX_ANNOUNCED = 8


def tcp(ip: str, port: int, key: bytes) -> str:
    return Address("tcp", host=ip, port=port, peer_key=key).format()


def dht_addresses(*, key: bytes, listen_port: int, interface_ips: Iterable[str],
                  confirmed: Iterable[tuple[str, int]] = (), mapped: tuple[str, int] | None = None,
                  extra: Iterable[str] = (), allow_loopback: bool = False) -> list[str]:
    """The addresses to announce to the DHT (module docstring)."""
    out: list[str] = [tcp(ip, port, key) for ip, port in confirmed if ip_kind(ip) == "public"]
    if mapped is not None and ip_kind(mapped[0]) == "public":
        out.append(tcp(mapped[0], mapped[1], key))
    ips = list(interface_ips)
    out += [tcp(ip, listen_port, key) for ip in ips if ip_kind(ip) == "public"]
    if allow_loopback:
        out += [tcp(ip, listen_port, key) for ip in ips if ip_kind(ip) == "loopback"]
    # Other ways in (relayed addresses) always keep their room, after the direct ones.
    others = list(dict.fromkeys(extra))[:MAX_ANNOUNCED // 2]
    direct = [a for a in dict.fromkeys(out) if a not in others]
    return direct[:MAX_ANNOUNCED - len(others)] + others


def interface_ips(listen_hosts: Iterable[str], local: dict[str, list[str]]) -> list[str]:
    """The IPs this device accepts connections on: each listening host, wildcards expanded to
    ``local`` (``{"v4": [...], "v6": [...]}``, this machine's interface addresses); ``::`` is
    dual-stack and takes both families."""
    out: list[str] = []
    for host in listen_hosts:
        if host == "0.0.0.0":
            out += local.get("v4", [])
        elif host == "::":
            out += local.get("v4", []) + local.get("v6", [])
        else:
            out.append(host)
    return [ip for ip in dict.fromkeys(out) if ip_kind(ip) not in ("unusable", "name")]
