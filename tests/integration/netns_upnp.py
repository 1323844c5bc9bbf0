"""A home router in network namespaces, with miniupnpd answering NAT-PMP and UPnP-IGD.

    [lan]  10.T.0.2 --veth-- 10.T.0.1 [rtr] 198.18.T.1 --veth-- 198.18.T.2, .3  [pub]
                                   MASQUERADE, miniupnpd

``pub`` is "the internet" (198.18.0.0/15, the benchmarking range), ``lan`` a device behind
the router's NAT (iptables MASQUERADE of 10.T.0.0/24 out of the WAN side). The router's
forward chain drops what it did not allow: LAN to WAN, replies, and what miniupnpd adds.

miniupnpd 2.3.1 refuses to forward ports when its WAN address is not public unless it learns
its address by STUN; a small STUN responder (:data:`STUN_SERVER`) runs on ``pub`` while the
router starts. Debian's nft_init.sh is broken, so the tables miniupnpd expects are loaded here.

Everything is made by :meth:`Router.up` and removed by :meth:`Router.down` (call it in a
``finally``): processes inside the namespaces are killed first (``ip netns del`` does not).
:func:`unavailable` says why the tests cannot run here (not root, no ``ip``, no miniupnpd), or
``None``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.integration import netns

STUN_SERVER = r'''
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 3478))
while True:
    data, (ip, port) = s.recvfrom(2048)
    if len(data) < 20 or data[:2] != b"\x00\x01":
        continue
    tid = data[4:20]
    xport = port ^ 0x2112
    xip = struct.unpack(">I", socket.inet_aton(ip))[0] ^ 0x2112A442
    attr = struct.pack(">HHBBHI", 0x0020, 8, 0, 1, xport, xip)
    s.sendto(struct.pack(">HH", 0x0101, len(attr)) + tid + attr, (ip, port))
'''

NFT_RULES = """
table inet filter {
    chain miniupnpd { }
    chain prerouting_miniupnpd { }
    chain postrouting_miniupnpd { }
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname "lan" oifname "wan" accept
        jump miniupnpd
    }
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        jump prerouting_miniupnpd
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        jump postrouting_miniupnpd
    }
}
"""


def unavailable() -> str | None:
    return netns.unavailable(("ip", "iptables", "nft", "miniupnpd"))


class Router:
    def __init__(self, *, symmetric: bool = False) -> None:
        """``symmetric``: MASQUERADE ``--random-fully``, a new public port per connection."""
        self.symmetric = symmetric
        self.tag = os.getpid() % 200 + 20
        t = self.tag
        self.pub, self.rtr, self.lan = (f"cbxup{k}{os.getpid()}" for k in ("p", "r", "l"))
        self.wan_ip, self.pub_ip, self.pub_ip2 = f"198.18.{t}.1", f"198.18.{t}.2", f"198.18.{t}.3"
        self.gateway, self.lan_ip = f"10.{t}.0.1", f"10.{t}.0.2"
        self.dir = Path(tempfile.mkdtemp(prefix="cbxupnp"))
        self.created: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def run(self, *cmd: str, ns: str | None = None, stdin: str | None = None) -> str:
        full = [*(["ip", "netns", "exec", ns] if ns else []), *cmd]
        r = subprocess.run(full, capture_output=True, text=True, input=stdin, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(full)}: {r.stderr.strip()}")
        return r.stdout

    def spawn(self, ns: str, *cmd: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.PIPE)
        self.procs.append(proc)
        return proc

    def up(self) -> None:
        for ns in (self.pub, self.rtr, self.lan):
            self.run("ip", "netns", "add", ns)
            self.created.append(ns)
            self.run("ip", "link", "set", "lo", "up", ns=ns)
        self.run("ip", "link", "add", "wan", "netns", self.rtr, "type", "veth", "peer", "name", "eth0",
                 "netns", self.pub)
        self.run("ip", "link", "add", "lan", "netns", self.rtr, "type", "veth", "peer", "name", "eth0",
                 "netns", self.lan)
        for ns, dev, ip in ((self.rtr, "wan", self.wan_ip), (self.pub, "eth0", self.pub_ip),
                            (self.rtr, "lan", self.gateway), (self.lan, "eth0", self.lan_ip)):
            self.run("ip", "addr", "add", f"{ip}/24", "dev", dev, ns=ns)
            self.run("ip", "link", "set", dev, "up", ns=ns)
        self.run("ip", "addr", "add", f"{self.pub_ip2}/24", "dev", "eth0", ns=self.pub)  # a second public host
        self.run("ip", "route", "add", "default", "via", self.gateway, ns=self.lan)
        self.run("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=self.rtr)
        self.run("iptables", "-t", "nat", "-A", "POSTROUTING", "-s", f"10.{self.tag}.0.0/24", "-o", "wan",
                 "-j", "MASQUERADE", *(["--random-fully"] if self.symmetric else []), ns=self.rtr)
        self.run("nft", "-f", "-", ns=self.rtr, stdin=NFT_RULES)
        stun = self.dir / "stun.py"
        stun.write_text(STUN_SERVER)
        self.spawn(self.pub, sys.executable, str(stun), self.pub_ip)
        conf = self.dir / "miniupnpd.conf"
        conf.write_text("\n".join([
            "ext_ifname=wan", "listening_ip=lan", "http_port=5000", "enable_upnp=yes", "enable_natpmp=yes",
            "secure_mode=yes", "ipv6_disable=yes", "system_uptime=yes",
            "uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b", "ext_perform_stun=yes",
            f"ext_stun_host={self.pub_ip}", "ext_stun_port=3478", f"lease_file={self.dir}/leases",
            f"allow 1024-65535 10.{self.tag}.0.0/24 1024-65535", "deny 0-65535 0.0.0.0/0 0-65535", ""]))
        time.sleep(0)  # the STUN responder binds within milliseconds; miniupnpd retries STUN itself
        self.miniupnpd = self.spawn(self.rtr, "miniupnpd", "-d", "-f", str(conf), "-P", str(self.dir / "pid"))

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Until miniupnpd listens for NAT-PMP (UDP 5351) on the LAN side."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.miniupnpd.poll() is not None:
                raise RuntimeError("miniupnpd exited: " + self.output(self.miniupnpd))
            if ":5351 " in self.run("ss", "-Hlun", ns=self.rtr):
                return
            time.sleep(0.05)
        raise RuntimeError("miniupnpd did not start listening")

    @staticmethod
    def output(proc: subprocess.Popen[bytes]) -> str:
        if proc.poll() is None:
            proc.kill()
        out = proc.stdout.read() if proc.stdout else b""
        return out.decode(errors="replace")[-3000:]

    def down(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        for ns in reversed(self.created):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                subprocess.run(["kill", "-9", pid], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
