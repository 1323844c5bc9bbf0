"""Reachability: where this device is on the internet and how others can reach it.

- :mod:`.scope`: what kind of IP an address is (loopback, link-local, private, public).
- :mod:`.observed`: the ``observed`` service: a peer says which address it sees for us, and
  dials it back on request (AutoNAT-like).
- :mod:`.classify`: pure logic from observations to a verdict (public, mapped, behind a
  cone-like or symmetric NAT, offline) and the words ``cobox status`` shows.
- :mod:`.announce`: which addresses go to the DHT and which only to the LAN.
- :mod:`.natpmp`, :mod:`.portmap`: port mapping on the home router (NAT-PMP).
- :mod:`.service`: the daemon-side coordinator tying these together.
"""

DEFAULT_PORT = 47100
"""TCP (peer connections) and UDP (DHT) port a daemon uses unless configured otherwise: fixed,
so a user can forward it on a router. Not assigned by IANA (registered ports end at 49151, and
47100 has no registration) nor used by a common service."""

RELAY_PORT = 47101
"""TCP port of the relay service of a daemon that offers one (``[relay] listen``): fixed too, so
a relay behind a port forward keeps working across restarts."""
