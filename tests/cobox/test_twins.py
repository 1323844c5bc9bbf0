"""Two live devices with one identity (issue 17 item 5): the flapping is detected, explained,
and stopped; the device that stays connected is told."""

from __future__ import annotations

import os

import pytest

from cobox import netview
from cobox.groups import Group
from cobox.twins import TWIN_EXTENSION, TwinDetector, TwinGuard, decode_report, encode_report
from networker import RemoteProtocolError
from networker.identity import DeviceIdentity
from networker.keys import GroupKeys
from networker.node import Node
from storage import Store
from tests.helpers import memory_pair, until


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_detector_needs_repeated_replacements_within_the_window():
    clock = Clock()
    d = TwinDetector(window=60, threshold=3, hold=600, clock=clock, wall=lambda: 1000.0)
    pid = os.urandom(32)
    assert d.on_replaced(pid) is None
    clock.t = 100  # the first one left the window
    assert d.on_replaced(pid) is None
    clock.t = 110
    assert d.on_replaced(pid) is None
    assert d.suspects() == []
    clock.t = 120
    twin = d.on_replaced(pid)
    assert twin is not None and twin.replacements == 3 and twin.since == 1000.0
    assert d.on_replaced(pid) is None  # once per hold period
    assert [t.peer_id for t in d.suspects()] == [pid]
    clock.t = 720
    assert d.suspects() == []
    assert d.on_replaced(os.urandom(32)) is None  # another id counts on its own


def test_twin_reports_decode_strictly():
    assert decode_report(encode_report(5)) == 5
    for bad in (b"", b"\xc1", encode_report(0), b"\x92\x01\x02", b"\x91\xa1x", b"\x91\xc3", bytes(100)):
        with pytest.raises(RemoteProtocolError):
            decode_report(bad)


@pytest.fixture
async def world(tmp_path):
    made: list[tuple[Node, Store]] = []
    address = os.urandom(32)

    async def device(name: str, identity: DeviceIdentity) -> tuple[Node, Group]:
        store = await Store.open(tmp_path / name)
        group = Group(store, "g", GroupKeys.from_address(address), identity, 0.0)
        await group.load()
        node = Node(identity, store)
        node.join(group)
        made.append((node, store))
        return node, group

    yield device
    for node, store in made:
        await node.close()
        await store.close()


async def test_two_devices_with_one_identity_stop_flapping_and_are_told(world):
    twin_id, other_id = DeviceIdentity.generate(), DeviceIdentity.generate()
    x1, g1 = await world("x1", twin_id)
    x2, _g2 = await world("x2", DeviceIdentity.from_seed(twin_id.seed))  # the restored copy
    c, gc = await world("c", other_id)
    guard = TwinGuard(c)
    c.on_event.append(guard.on_peer_event)
    gc.twins = guard
    pid = twin_id.peer_id

    def dial(x: Node) -> None:
        a, b = memory_pair(pid, other_id.peer_id)
        x.add_connection(a)
        c.add_connection(b)

    # the two twins reach c in turn, each replacing the other's connection
    for k, x in enumerate((x1, x2, x1, x2)):
        dial(x)
        await until(lambda: netview.live_channels(c), 5.0, "a live channel")
        if k:
            await until(lambda k=k: len(guard.detector._recent.get(pid, ())) >= k
                        or guard.detector.suspects(), 5.0, f"replacement {k}")
    await until(lambda: guard.detector.suspects(), 5.0, "the twins to be detected")
    kept = c.peers[pid]
    # from now on the connection that is live is kept: the other twin's are closed as they come
    dial(x1)
    assert c.peers[pid] is kept and not kept.closed.is_set()
    status = guard.status({pid: "laptop"})
    assert status["peers"][0]["name"] == "laptop" and "two places" in status["peers"][0]["words"]
    # the device kept (x2, which dialled last before the detection) is told, and says so in its status
    await until(lambda: g1.twins.reports or _g2.twins.reports, 5.0, "the report to reach the kept twin")
    told = _g2.twins.status({}) if _g2.twins.reports else g1.twins.status({})
    assert "another device is running with this device's identity" in told["words"]


async def test_a_malformed_twin_report_disconnects_its_sender(world):
    a_id, b_id = DeviceIdentity.generate(), DeviceIdentity.generate()
    a, _ga = await world("a", a_id)
    b, gb = await world("b", b_id)
    ca, cb = memory_pair(a_id.peer_id, b_id.peer_id)
    a.add_connection(ca)
    b.add_connection(cb)
    await until(lambda: netview.live_channels(a), 5.0, "a live channel")
    _peer, channel = netview.live_channels(a)[0]
    netview.send_extension(channel, TWIN_EXTENSION, b"\x91\xa4evil")
    await until(lambda: a_id.peer_id not in b.peers, 5.0, "b to drop a")
    assert gb.twins.reports == {}
