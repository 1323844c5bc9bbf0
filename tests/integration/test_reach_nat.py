"""Daemons behind a real NAT router (issue 14 items 1, 2, 3, 6): a device behind MASQUERADE
learns from two public peers that its NAT keeps one mapping (it dials from its listening port,
so both see the same public port): "cone"; with port mapping on, the router forwards its port,
a public peer dials it back there: "mapped". Neither announces its 10.x address to the DHT.
Behind MASQUERADE --random-fully the two peers see different ports: "symmetric"."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.daemons import NO_DISCOVERY, ok
from tests.integration.netns_upnp import Router, unavailable


async def wait_status(daemon, pred, what: str, timeout: float = 40.0) -> dict:
    last: dict = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = await daemon.status()
                if pred(last):
                    return last
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}; last status: {last.get('reachability')}") from None


async def test_behind_a_nat_router_cone_then_mapped(daemons):
    reason = unavailable()
    if reason:
        pytest.skip(f"cannot build a router namespace: {reason}")
    router = Router()
    try:
        router.up()
        router.wait_ready()
        pub = ["ip", "netns", "exec", router.pub]
        lan = ["ip", "netns", "exec", router.lan]
        a1 = await daemons("a1", NO_DISCOVERY, host=router.pub_ip, wrap=pub)
        a2 = await daemons("a2", NO_DISCOVERY, host=router.pub_ip2, wrap=pub)
        off = await daemons("off", NO_DISCOVERY, host=router.lan_ip, wrap=lan, config=["[portmap]", "enabled = false"])
        on = await daemons("on", NO_DISCOVERY, host=router.lan_ip, wrap=lan)

        # Without a mapping: two public peers see one public port: a cone-like NAT, not reachable.
        for a in (a1, a2):
            await ok(off.home, "peers", "add", await a.address())
        s = await wait_status(off, lambda s: s["reachability"]["kind"] == "cone", "a cone-like verdict")
        port = int((await off.address()).split("~")[0].rsplit(":", 1)[1])
        assert s["reachability"]["external"] == [router.wan_ip]
        assert "hole punching" in s["reachability"]["words"]
        assert s["reachability"]["confirmed"] == []  # the dial-back did not get through
        assert not any(router.lan_ip in a for a in s["advertised"])
        assert not any(f":{port}~" in a for a in s["advertised"])  # nothing dialable to announce

        # With port mapping (the default): the router forwards the port; a peer dials it back.
        s = await wait_status(on, lambda s: s["reachability"]["portmap"]["state"] == "mapped", "a port mapping")
        port = int((await on.address()).split("~")[0].rsplit(":", 1)[1])
        assert s["reachability"]["mapped"] == f"{router.wan_ip}:{port}"
        await ok(on.home, "peers", "add", await a1.address())
        s = await wait_status(on, lambda s: s["reachability"]["kind"] == "mapped", "a mapped verdict")
        assert s["reachability"]["confirmed"] == [f"{router.wan_ip}:{port}"]
        assert s["advertised"][0].startswith(f"tcp:{router.wan_ip}:{port}~noise:")
        assert not any(router.lan_ip in a for a in s["advertised"])
        def forwarded() -> bool:
            rules = router.run("nft", "list", "chain", "inet", "filter", "prerouting_miniupnpd", ns=router.rtr)
            return f"dport {port} " in rules
        assert forwarded()
        await on.stop()  # the mapping is removed at stop
        assert not forwarded()
    finally:
        router.down()


async def test_behind_a_symmetric_nat_each_peer_sees_another_port(daemons):
    reason = unavailable()
    if reason:
        pytest.skip(f"cannot build a router namespace: {reason}")
    router = Router(symmetric=True)
    try:
        router.up()
        router.wait_ready()
        pub = ["ip", "netns", "exec", router.pub]
        a1 = await daemons("a1", NO_DISCOVERY, host=router.pub_ip, wrap=pub)
        a2 = await daemons("a2", NO_DISCOVERY, host=router.pub_ip2, wrap=pub)
        b = await daemons("b", NO_DISCOVERY, host=router.lan_ip, wrap=["ip", "netns", "exec", router.lan],
                          config=["[portmap]", "enabled = false"])
        for a in (a1, a2):
            await ok(b.home, "peers", "add", await a.address())
        s = await wait_status(b, lambda s: s["reachability"]["kind"] == "symmetric", "a symmetric verdict")
        assert "relay" in s["reachability"]["words"] and s["reachability"]["confirmed"] == []
    finally:
        router.down()
