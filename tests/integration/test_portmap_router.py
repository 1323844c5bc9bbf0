"""Port mapping against a real router (issue 14 item 3): miniupnpd in a network namespace
behind which a device maps its port with PCP, NAT-PMP or UPnP-IGD; a host on the public side can then connect
to the router's external address, and cannot once the device removed the mapping."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.integration.netns_upnp import Router, unavailable

PORT = 47100
PROBE = r'''
import socket, sys
s = socket.socket()
s.settimeout(3)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print(s.recv(64).decode().strip() or "empty")
except OSError as e:
    print("failed:", e)
'''


def connect_from_public(router: Router, port: int) -> str:
    return router.run(sys.executable, "-c", PROBE, router.wan_ip, str(port), ns=router.pub).strip()


def read_step(proc: subprocess.Popen[bytes], step: str, output: list[str]) -> dict:
    for _ in range(50):  # bounded: the process prints a handful of lines
        line = proc.stdout.readline().decode()  # type: ignore[union-attr]
        if not line:
            raise AssertionError(f"mapping process ended before {step!r}:\n" + "".join(output))
        output.append(line)
        if line.startswith("{"):
            doc = json.loads(line)
            if doc["step"] == step:
                return doc
    raise AssertionError(f"no {step!r} line:\n" + "".join(output))


@pytest.mark.parametrize("kind", ["pcp", "natpmp", "upnp"])
def test_a_mapping_reaches_the_device_and_is_removed_at_stop(kind):
    reason = unavailable()
    if reason:
        pytest.skip(f"cannot build a router namespace: {reason}")
    router = Router()
    output: list[str] = []
    try:
        router.up()
        router.wait_ready()
        assert connect_from_public(router, PORT).startswith("failed")  # no mapping: the NAT lets nothing in
        proc = router.spawn(router.lan, sys.executable, "-m", "tests.integration.portmap_proc", str(PORT), kind)
        mapped = read_step(proc, "mapped", output)
        assert mapped["state"] == "mapped" and mapped["external"] == f"{router.wan_ip}:{PORT}"
        assert mapped["protocol"] == {"pcp": "PCP", "natpmp": "NAT-PMP", "upnp": "UPnP-IGD"}[kind]
        assert {m["protocol"] for m in mapped["mappings"]} == {"tcp", "udp"}
        assert 0 < mapped["next"] < mapped["mappings"][0]["lifetime"]  # renewed before it expires
        renewed = read_step(proc, "renewed", output)
        assert renewed["external"] == mapped["external"]
        assert connect_from_public(router, PORT) == "behind-nat"
        proc.stdin.write(b"stop\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        removed = read_step(proc, "removed", output)
        assert removed["state"] == "stopped" and removed["mappings"] == []
        assert connect_from_public(router, PORT).startswith("failed")
    finally:
        router.down()
