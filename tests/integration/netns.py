"""Network topologies with NAT routers in Linux network namespaces, made and removed by tests.

An *internet* namespace holds a bridge for 198.18.0.0/24 (a benchmarking range, "public" here;
no other public addresses are ever used). On it sit public hosts (``198.18.0.H``) and the WAN
side of NAT routers. A router has a LAN bridge ``10.N.0.0/24`` with its hosts behind it, routes
between the two, masquerades what leaves its WAN (``iptables -t nat ... MASQUERADE``: Linux keeps
the source port where it can, which makes a cone-like, port-preserving mapping; with
``symmetric=True`` it adds ``--random-fully``, so every new destination gets a random port) and
lets in from the WAN only what belongs to a connection its LAN opened (conntrack; anything else
is dropped without an answer). A router may
sit behind another router (double NAT). Routers have no default route: an address of another
LAN is unreachable at once, as on the internet. Each router counts in its ``COBOXCOUNT`` chain
the TCP packets (not resets) of established connections it forwards from its WAN into its LAN
per source
(:meth:`Topology.packets_from`), so a test can tell a direct (hole-punched) connection
between two routers from one through a relay.

Names carry a random tag, so parallel runs do not collide; :meth:`Topology.down` deletes every
namespace it made (and with them their interfaces). :func:`unavailable` says why namespaces
cannot be made here (then tests skip with that message).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

PUBLIC = "198.18.0"


def unavailable(tools: tuple[str, ...] = ("ip", "iptables")) -> str | None:
    """Why network namespaces with these tools cannot be made here (``None``: they can)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in tools:
        if shutil.which(tool) is None:
            return f"needs {tool} (.ci/deps installs it: iproute2 iptables nftables miniupnpd-nftables)"
    probe = f"cbxprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`ip netns add` fails here: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def run(*cmd: str, ns: str | None = None, check: bool = True) -> str:
    full = [*(["ip", "netns", "exec", ns] if ns else []), *cmd]
    r = subprocess.run(full, capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(full)}: {r.stderr.strip()}")
    return r.stdout


@dataclass
class Router:
    ns: str
    wan_ip: str
    lan: str  # "10.N.0"
    symmetric: bool
    hosts: int = 0


@dataclass
class Topology:
    tag: str = field(default_factory=lambda: os.urandom(3).hex())
    created: list[str] = field(default_factory=list)
    routers: dict[str, Router] = field(default_factory=dict)
    _ports: int = 0
    _public_hosts: int = 0

    def name(self, what: str) -> str:
        return f"cbx{self.tag}{what}"[:30]

    def _netns(self, what: str) -> str:
        ns = self.name(what)
        run("ip", "netns", "add", ns)
        self.created.append(ns)
        run("ip", "link", "set", "lo", "up", ns=ns)
        return ns

    def up(self) -> Topology:
        self.inet = self._netns("inet")
        run("ip", "link", "add", "br0", "type", "bridge", ns=self.inet)
        run("ip", "link", "set", "br0", "up", ns=self.inet)
        return self

    def _plug(self, ns: str, bridge_ns: str, ifname: str) -> None:
        """A veth from ``ns`` (named ``ifname`` there) to the bridge br0 of ``bridge_ns``."""
        self._ports += 1
        port = f"p{self._ports}"
        run("ip", "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", port, "netns", bridge_ns)
        run("ip", "-n", bridge_ns, "link", "set", port, "master", "br0", "up")
        run("ip", "-n", ns, "link", "set", ifname, "up")

    def public_host(self, what: str) -> tuple[str, str]:
        """A host on the public bridge: (namespace, IP)."""
        self._public_hosts += 1
        ip = f"{PUBLIC}.{self._public_hosts}"
        ns = self._netns(what)
        self._plug(ns, self.inet, "eth0")
        run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        return ns, ip

    def nat(self, what: str, n: int, *, symmetric: bool = False, behind: str | None = None) -> Router:
        """A NAT router with LAN 10.n.0.0/24, its WAN on the public bridge or (``behind``)
        on another router's LAN."""
        ns = self._netns(what)
        if behind is None:
            wan_ip, prefix, gateway = f"{PUBLIC}.{100 + n}", 24, None
            self._plug(ns, self.inet, "wan")
        else:
            outer = self.routers[behind]
            outer.hosts += 1
            wan_ip, prefix, gateway = f"{outer.lan}.{100 + outer.hosts}", 24, f"{outer.lan}.1"
            self._plug(ns, outer.ns, "wan")
        run("ip", "-n", ns, "addr", "add", f"{wan_ip}/{prefix}", "dev", "wan")
        if gateway is not None:
            run("ip", "-n", ns, "route", "add", "default", "via", gateway)
        run("ip", "-n", ns, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", ns, "link", "set", "br0", "up")
        lan = f"10.{n}.0"
        run("ip", "-n", ns, "addr", "add", f"{lan}.1/24", "dev", "br0")
        run("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=ns)
        masq = ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"]
        run(*masq, *(["--random-fully"] if symmetric else []), ns=ns)
        run("iptables", "-N", "COBOXCOUNT", ns=ns)
        run("iptables", "-A", "FORWARD", "-i", "wan", "-o", "br0", "-p", "tcp", "!", "--tcp-flags", "RST", "RST",
            "-m", "conntrack", "--ctstate", "ESTABLISHED", "-j", "COBOXCOUNT", ns=ns)
        run("iptables", "-A", "FORWARD", "-i", "wan", "-o", "br0", "-m", "conntrack", "--ctstate",
            "ESTABLISHED,RELATED", "-j", "ACCEPT", ns=ns)
        run("iptables", "-A", "FORWARD", "-i", "wan", "-o", "br0", "-j", "DROP", ns=ns)
        # a SYN to a port with no mapping is dropped quietly (no RST), as home routers do
        run("iptables", "-A", "INPUT", "-i", "wan", "-m", "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP",
            ns=ns)
        router = Router(ns, wan_ip, lan, symmetric)
        self.routers[what] = router
        return router

    def host(self, what: str, router: str) -> tuple[str, str]:
        """A host on ``router``'s LAN: (namespace, IP)."""
        r = self.routers[router]
        r.hosts += 1
        ip = f"{r.lan}.{r.hosts + 1}"
        ns = self._netns(what)
        self._plug(ns, r.ns, "eth0")
        run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        run("ip", "-n", ns, "route", "add", "default", "via", f"{r.lan}.1")
        return ns, ip

    @staticmethod
    def firewall(ns: str) -> None:
        """The host in ``ns`` takes no new connection or datagram from outside (replies only)."""
        run("iptables", "-A", "INPUT", "-i", "eth0", "-m", "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP",
            ns=ns)

    def block_udp(self, router: str) -> None:
        """``router`` lets no UDP out of its LAN (a network that allows only TCP: no DHT)."""
        run("iptables", "-I", "FORWARD", "-i", "br0", "-o", "wan", "-p", "udp", "-j", "DROP",
            ns=self.routers[router].ns)

    def count_from(self, router: str, source: str) -> None:
        """Start counting packets ``router`` forwards into its LAN from ``source``."""
        run("iptables", "-A", "COBOXCOUNT", "-s", source, "-j", "RETURN", ns=self.routers[router].ns)

    def packets_from(self, router: str, source: str) -> int:
        out = run("iptables", "-L", "COBOXCOUNT", "-v", "-x", "-n", ns=self.routers[router].ns)
        total = 0
        for line in out.splitlines():
            cols = line.split()
            if len(cols) >= 8 and cols[2] == "RETURN" and cols[7].split("/")[0] == source:
                total += int(cols[0])
        return total

    def down(self) -> None:
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.created.clear()

    @staticmethod
    def wrap(ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]
