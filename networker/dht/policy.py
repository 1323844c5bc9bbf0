"""Which addresses a DHT record may carry, and which of them a node will dial.

Theory of operation
-------------------
A DHT record is written by anyone who can make a key; a node that dialled whatever records
name could be pointed at its own machine (``unix:`` sockets, loopback services), at the local
network's link-local or multicast ranges, or at a third party, many times a second. A record's
signature only shows that ``peer_id`` wrote it, so an address is acceptable only if it
*holds that key*: the Noise handshake then fails unless the host really is ``peer_id``.

:class:`AddressPolicy` accepts one alternative of an address if all of these hold:

- transport ``tcp`` (never ``unix:``), host an IP literal (a DNS name could resolve anywhere,
  so names are left to addresses the user typed), port 1-65535;
- ``~noise:KEY`` present and equal to the record's peer id;
- the IP (the IPv4 one inside an IPv4-mapped IPv6 address) is not unspecified, multicast,
  link-local, reserved, or (unless ``allow_loopback``) loopback.

Private ranges (10/8, 192.168/16, fc00::/7) are kept: peers on one LAN find each other through
the DHT too. Which addresses a daemon *announces* is settled elsewhere (reachability); this
policy is applied when announcing (to what the daemon hands the DHT), when storing (a record
with no acceptable address is refused) and when looking up (only acceptable alternatives reach
the swarm). ``allow_loopback`` exists for tests and single-machine setups whose daemons all run
on 127.0.0.1 (config ``[dht] allow_loopback``, false by default).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..address import Address, parse
from ..errors import AddressError
from .records import PeerRecord


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    allow_loopback: bool = False

    def accepts(self, alt: Address, peer_id: bytes) -> bool:
        """Whether one alternative may be published in or dialled from ``peer_id``'s record."""
        if alt.transport != "tcp" or alt.peer_key != peer_id or not 0 < alt.port < 65536:
            return False
        try:
            ip = ipaddress.ip_address(alt.host)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_unspecified or ip.is_multicast or ip.is_link_local or ip.is_reserved:
            return False
        return self.allow_loopback or not ip.is_loopback

    def filter(self, addresses: tuple[str, ...] | list[str], peer_id: bytes) -> tuple[str, ...]:
        """The acceptable alternatives of ``addresses`` (each formatted), in order, deduplicated;
        unparseable addresses are skipped."""
        kept: list[str] = []
        for text in addresses:
            try:
                multi = parse(text)
            except AddressError:
                continue
            for alt in multi.alternatives:
                if self.accepts(alt, peer_id):
                    kept.append(alt.format())
        return tuple(dict.fromkeys(kept))

    def dialable(self, record: PeerRecord) -> tuple[str, ...]:
        """The alternatives of a verified record that may be dialled."""
        return self.filter(record.addresses, record.peer_id)
