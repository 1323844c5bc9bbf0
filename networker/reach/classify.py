"""From what peers saw of us to a verdict on reachability, and the words for it. Pure.

Theory of operation
-------------------
Each connected peer tells us (the ``observed`` service) the address it sees for our end of the
connection: an :class:`Observation`. When we dialled out from our listening port (the transport
tries to), a NAT that keeps one mapping per local port shows every peer the same public
``ip:port``; a *symmetric* NAT shows each destination another port. We also ask peers to dial
our listening (or mapped) port back at the IP they see: a :class:`DialBack`. :func:`classify`
turns these into a :class:`Reachability`:

==============  ==============================================================================
kind            when
==============  ==============================================================================
``offline``     no peer connected and no DHT contact known (whatever was seen before)
``unknown``     nobody has said what they see yet (no peer connected, or not yet asked)
``public``      a peer dialled us back at an address that is one of our interface addresses
``mapped``      a peer dialled us back at the router's port mapping (UPnP / NAT-PMP)
``forwarded``   a peer dialled us back at a public address that is not ours (a port forward)
``cone``        not dialled back; two peers at different IPs saw one mapping of a local port
``symmetric``   not dialled back; two peers at different IPs saw different ports for one
``nat``         not dialled back, only one peer's view so far (cannot tell cone from symmetric)
==============  ==============================================================================

Only dial-back success makes an address *confirmed*: those are what the DHT gets (see
:mod:`networker.reach.announce`). A peer can lie about what it sees; one lying peer can make us
announce an address that does not work (peers dialling it just fail), not one that reaches
somebody else's machine with our key, since every dial checks the Noise key.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from .scope import ip_kind


@dataclass(frozen=True, slots=True)
class Observation:
    observer_ip: str      # where the peer that saw us is
    ip: str               # what it saw: our public IP...
    port: int             # ...and port
    local_port: int       # our end's port of that connection (our listening port if reused)
    outbound: bool        # we dialled (the NAT made a mapping for this connection)


@dataclass(frozen=True, slots=True)
class DialBack:
    observer_ip: str
    ip: str
    port: int
    ok: bool


@dataclass(frozen=True, slots=True)
class Reachability:
    kind: str
    words: str
    confirmed: tuple[tuple[str, int], ...] = ()   # (ip, port) peers dialled back
    external: tuple[str, ...] = ()                # public IPs peers saw

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "words": self.words,
                "confirmed": [f"{ip}:{port}" if ":" not in ip else f"[{ip}]:{port}" for ip, port in self.confirmed],
                "external": list(self.external)}


WORDS = {
    "offline": ("Cannot reach anybody: no peer is connected and no DHT node is known. Check that this "
                "device is online, then join a group with an invite from a device that is running (an "
                "invite carries addresses to start from), or set [dht] bootstrap to a reachable cobox "
                "node (HOST:47100)."),
    "offline-bootstrap": ("Cannot reach anybody: no peer is connected and none of the configured DHT nodes "
                          "({nodes}) answers. Check that this device is online and that those nodes run and let "
                          "UDP in, or join a group with an invite from a device that is running (an invite "
                          "carries addresses to start from)."),
    "unknown": "Connected to peers; not yet known whether others can connect to this device.",
    "unknown-alone": ("No peer is connected yet ({contacts} DHT nodes known): devices of your groups connect when "
                      "one of them is running. If none ever does, check that they run, or send an invite "
                      "again from a device that is running."),
    "public": "Reachable: this device has a public address ({addr}) that peers connected back to.",
    "mapped": "Reachable through the router's port mapping ({addr}).",
    "forwarded": "Reachable: peers connected back to {addr} (a port forward on the router).",
    "cone": ("Behind a NAT that keeps its mappings ({ext}): peers cannot connect to this device, but "
             "hole punching can work. To be reachable, forward TCP and UDP port {port} on the router "
             "or enable UPnP/NAT-PMP there."),
    "symmetric": ("Behind a symmetric NAT ({ext}: each peer sees another port): peers cannot connect "
                  "to this device and hole punching will fail; connections go through a relay. "
                  "Forward TCP and UDP port {port} on the router or enable UPnP/NAT-PMP there."),
    "nat": ("Behind a NAT ({ext}): peers cannot connect to this device. Forward TCP and UDP port "
            "{port} on the router or enable UPnP/NAT-PMP there."),
}


FAILED_FROM = 2  # distinct peers whose dial-back failed before "not reachable" is believed


def dialback_verdict(recent: Iterable[DialBack]) -> bool | None:
    """Whether others can dial this device, from recent dial-backs: ``True`` when one worked,
    ``False`` when peers at :data:`FAILED_FROM` different IPs tried and none could, ``None``
    while not known (one peer's failure alone may be its lie or its own firewall)."""
    recent = list(recent)
    if any(d.ok for d in recent):
        return True
    return False if len({d.observer_ip for d in recent}) >= FAILED_FROM else None


def nat_kind(observations: Iterable[Observation]) -> str | None:
    """``cone``, ``symmetric`` or ``None`` (not enough outbound views from distinct observers)."""
    ports: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
    for o in observations:
        if o.outbound:
            ports[(o.local_port, o.ip)][o.observer_ip] = o.port
    verdict = None
    for seen in ports.values():
        if len(seen) < 2:
            continue
        if len(set(seen.values())) > 1:
            return "symmetric"
        verdict = "cone"
    return verdict


def classify(*, listen_port: int, interface_ips: Iterable[str], observations: Iterable[Observation],
             dialbacks: Iterable[DialBack], mapped: tuple[str, int] | None, peers: int,
             dht_contacts: int, bootstrap: Iterable[str] = ()) -> Reachability:
    """The verdict (module docstring); ``bootstrap``: the configured DHT nodes, named when
    none of them answers."""
    observations = list(observations)
    ours = set(interface_ips)
    confirmed = tuple(dict.fromkeys((d.ip, d.port) for d in dialbacks if d.ok))
    external = tuple(dict.fromkeys(o.ip for o in observations if ip_kind(o.ip) == "public"))
    ext_text = ", ".join(external) or "address unknown"
    if peers == 0 and dht_contacts == 0:
        nodes = ", ".join(list(bootstrap)[:4])
        words = WORDS["offline-bootstrap"].format(nodes=nodes) if nodes else WORDS["offline"]
        return Reachability("offline", words, confirmed, external)
    if confirmed:
        ip, port = confirmed[0]
        addr = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        if ip in ours:
            kind = "public"
        elif mapped is not None and (ip, port) == mapped:
            kind = "mapped"
        else:
            kind = "forwarded"
        return Reachability(kind, WORDS[kind].format(addr=addr), confirmed, external)
    if not observations:
        words = WORDS["unknown-alone"].format(contacts=dht_contacts) if peers == 0 else WORDS["unknown"]
        return Reachability("unknown", words, confirmed, external)
    kind = nat_kind(observations) or "nat"
    return Reachability(kind, WORDS[kind].format(ext=ext_text, port=listen_port), confirmed, external)
