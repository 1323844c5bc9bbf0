"""The dashboard's own documents, from literals: the devices panel, the folder activity told in
words, the optional features found among the control server's routes."""

from __future__ import annotations

from cobox.status import dashboard_document, device_documents
from cobox.web.activity import Activity, folder_changes

ME, P1, P2 = "aa" * 32, "bb" * 32, "cc" * 32


def _folder(**kw):
    f = {"group": "family", "path": "/f", "files": 2, "bytes": 10, "pending_down": 0, "conflicts": [], "error": ""}
    return {**f, **kw}


def test_devices_merge_members_and_connected_peers_with_last_seen_from_events() -> None:
    status = {"peer_id": ME, "groups": [{"name": "family"}, {"name": "work"}],
              "peers": [{"peer_id": P2, "groups": ["work"], "kind": "hole-punched", "address": "tcp:1.2.3.4:5",
                         "bytes_sent": 7, "bytes_received": 9}]}
    members = {"family": [{"peer_id": ME, "this_device": True}, {"peer_id": P1, "name": "laptop"}],
               "work": [{"peer_id": P1}, {"peer_id": P2}]}
    events = [{"time": 5.0, "kind": "connected", "peer": P1}, {"time": 8.0, "kind": "disconnected", "peer": P1},
              {"time": 9.0, "kind": "connected", "peer": P2}]
    paused = {**status, "peers": status["peers"] + [{"peer_id": P1, "connected": False, "paused": True,
                                                      "kind": "paused", "groups": []}]}
    p1 = next(d for d in device_documents(paused, events, members) if d["peer_id"] == P1)
    assert p1["paused"] and not p1["connected"] and p1["kind"] == ""  # a paused device not connected
    devices = device_documents(status, events, members)
    assert [d["peer_id"] for d in devices] == [P2, P1]  # connected first; this device is not listed
    p2, p1 = devices
    assert p2["connected"] and p2["kind"] == "hole-punched" and p2["bytes_received"] == 9 and p2["groups"] == ["work"]
    assert not p1["connected"] and p1["name"] == "laptop" and p1["last_seen"] == 8.0
    assert p1["groups"] == ["family", "work"]
    doc = dashboard_document(status, events, members, version="1.2", features={"pause": None},
                             kinds={P1: "direct LAN"}, changes={"family": 3.0})
    assert doc["version"] == "1.2" and doc["features"] == {"pause": None}
    assert [e["connection"] for e in doc["events"]] == ["direct LAN", "direct LAN", ""]


def test_folder_changes_are_sentences() -> None:
    before = [_folder(), _folder(group="gone")]
    after = [_folder(files=5, bytes=40, pending_down=0, conflicts=["a.conflict-x"], error="disk full")]
    assert folder_changes([_folder(pending_down=2)], after) == [
        "family: 3 files added", "family: downloads finished", "family: 1 conflict to resolve",
        "family: error: disk full"]
    assert folder_changes(before, [_folder(files=1)]) == ["family: 1 file removed", "gone: folder removed"]
    assert folder_changes([_folder(error="x")], [_folder(bytes=11)]) == ["family: files updated",
                                                                         "family: error cleared"]
    assert folder_changes([], [_folder()]) == ["family: folder added (/f)"]


def test_activity_keeps_a_bounded_list_and_starts_from_a_baseline() -> None:
    a = Activity(limit=2)
    a.observe(1.0, [_folder()])
    assert a.recent() == []  # the first look is the baseline
    for n in range(3, 6):
        a.observe(float(n), [_folder(files=n)])
    assert [x["text"] for x in a.recent()] == ["family: 1 file added", "family: 1 file added"]
    assert [x["time"] for x in a.recent()] == [4.0, 5.0]
