"""The ``"auto"`` relay settings follow reach's dial-back verdict (issue 14): a daemon with a
public address on its interface offers a relay while nothing says otherwise; once peers at two
IPs could not dial it back (a firewall in front of it), it stops offering and uses relays; a
verdict of "reachable" has it offer again. In process, with a real node and relay server."""

from __future__ import annotations

import dataclasses

from cobox import config
from cobox.relaying import Relaying
from networker.address import Address
from networker.identity import DeviceIdentity
from networker.node import Node
from storage import Store


class Swarm:
    candidates: dict = {}

    def refresh(self) -> None: ...


async def test_auto_offer_and_use_follow_the_dialback_verdict(tmp_path):
    cfg = dataclasses.replace(config.load(tmp_path / "home", env={}).relay, listen="tcp:127.0.0.1:0")
    assert cfg.enabled == "auto" and cfg.use == "auto"
    store = await Store.open(tmp_path / "store")
    node = Node(DeviceIdentity.generate(), store)
    public = Address("tcp", host="198.18.0.5", port=47100, peer_key=node.identity.peer_id).format()
    verdict: list[bool | None] = [None]
    r = Relaying(cfg, node, None, Swarm(), lambda: [public], lambda a: [a], dialed_back=lambda: verdict[0])
    try:
        await r.start()
        assert r.server is not None and r.client is None  # a public interface address: offer
        await r.reconsider()
        assert r.server is not None and r.client is None  # nothing new: nothing changes
        verdict[0] = False  # two peers could not dial it back
        await r.reconsider()
        assert r.server is None and r.client is not None
        assert r.status()["offering"] is None
        verdict[0] = True
        await r.reconsider()
        assert r.server is not None and r.client is not None  # offers again; keeps its reservations
    finally:
        await r.close()
        await node.close()
        await store.close()


async def test_a_daemon_behind_nat_uses_relays_and_offers_none_until_dialled_back(tmp_path):
    cfg = dataclasses.replace(config.load(tmp_path / "home", env={}).relay, listen="tcp:127.0.0.1:0")
    store = await Store.open(tmp_path / "store")
    node = Node(DeviceIdentity.generate(), store)
    private = Address("tcp", host="10.1.0.2", port=47100, peer_key=node.identity.peer_id).format()
    verdict: list[bool | None] = [None]
    r = Relaying(cfg, node, None, Swarm(), lambda: [private], lambda a: [a], dialed_back=lambda: verdict[0])
    try:
        await r.start()
        assert r.server is None and r.client is not None
        verdict[0] = True  # a port mapping made it reachable
        await r.reconsider()
        assert r.server is not None
    finally:
        await r.close()
        await node.close()
        await store.close()


async def test_the_relay_listens_on_its_fixed_port_and_falls_back_when_it_is_taken(tmp_path):
    import contextlib
    import socket

    from networker.reach import RELAY_PORT

    defaults = config.load(tmp_path / "home", env={}).relay
    assert defaults.listen == f"tcp:[::]:{RELAY_PORT}"
    blocker = socket.socket()
    with contextlib.suppress(OSError):  # taken already (another run): taken either way
        blocker.bind(("127.0.0.1", RELAY_PORT))
        blocker.listen()
    cfg = dataclasses.replace(defaults, listen=f"tcp:127.0.0.1:{RELAY_PORT}", enabled="true", use="false")
    store = await Store.open(tmp_path / "store")
    node = Node(DeviceIdentity.generate(), store)
    r = Relaying(cfg, node, None, Swarm(), lambda: [], lambda a: [a])
    try:
        await r.start()
        assert r.server is not None  # offered on a random port instead of failing
        ports = {int(a.split("~")[0].rsplit(":", 1)[1]) for a in r.server.addresses}
        assert ports and RELAY_PORT not in ports and 0 not in ports
    finally:
        blocker.close()
        await r.close()
        await node.close()
        await store.close()
