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
- the IP (the IPv4 one inside an IPv4-mapped IPv6 address) is of kind ``public`` in
  :func:`networker.reach.scope.ip_kind`: not unspecified, multicast, reserved, link-local,
  private (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) or (unless ``allow_loopback``)
  loopback. Benchmarking (198.18.0.0/15) and documentation ranges count as public: nothing
  stops them being routed, and the namespace tests use them as the internet.

Private addresses are never in the DHT: nobody beyond the LAN can dial them, and a record full of
them sent peers dialling 10.x addresses of their own networks; LAN peers find each other with
mDNS. Which addresses a daemon *announces* is settled elsewhere (:mod:`networker.reach`); this
policy is applied when announcing (to what the daemon hands the DHT), when storing (a record
with no acceptable address is refused) and when looking up (only acceptable alternatives reach
the swarm). ``allow_loopback`` exists for tests and single-machine setups whose daemons all run
on 127.0.0.1 (config ``[dht] allow_loopback``, false by default).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..address import Address, parse
from ..errors import AddressError
from ..reach.scope import ip_kind
from .records import PeerRecord


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    allow_loopback: bool = False

    def accepts(self, alt: Address, peer_id: bytes) -> bool:
        """Whether one alternative may be published in or dialled from ``peer_id``'s record."""
        if alt.transport != "tcp" or alt.peer_key != peer_id or not 0 < alt.port < 65536:
            return False
        kind = ip_kind(alt.host)
        return kind == "public" or (kind == "loopback" and self.allow_loopback)

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
