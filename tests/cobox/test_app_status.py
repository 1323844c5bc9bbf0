"""The pure status documents (cobox.status) from literals, and netview's views from fakes."""

from __future__ import annotations

from types import SimpleNamespace

from cobox import netview
from cobox.status import (
    FolderCounts,
    dashboard_document,
    group_document,
    sync_document,
)

FOLDER = {"path": "/f", "files": 2, "bytes": 30, "pending_down": 1, "error": "", "failed_count": 0,
          "last_error": "", "last_error_time": 0.0, "conflicts": ["a.conflict-x"]}


def test_synced_needs_a_peer_settled_channels_nothing_missing_and_no_download() -> None:
    assert sync_document("g", netview.Progress(1, 0, True), 5, None)["synced"] is True
    assert sync_document("g", netview.Progress(0, 0, True), 5, None)["synced"] is False
    assert sync_document("g", netview.Progress(1, 0, False), 5, None)["synced"] is False
    assert sync_document("g", netview.Progress(1, 3, True), 5, None)["synced"] is False
    doc = sync_document("g", netview.Progress(1, 0, True), 5, FolderCounts(2, 100, 40))
    assert doc["synced"] is False and doc["folder_bytes"] == 100 and doc["folder_pending_bytes"] == 40


def test_group_document_summarises_folder_and_receipts() -> None:
    backups = [{"peer": "p", "peer_name": "nas",
                "feeds": [{"held": 4, "confirmed": 10}, {"held": 2, "confirmed": None}],
                "backed_up": False, "quota_full": False, "audit": {}}]
    doc = group_document({"name": "g"}, {"synced": True}, {**FOLDER, "failed_count": 2, "error": "disk full"},
                         backups)
    assert doc["folders"][0]["status"] == ("2 files, 30 bytes, 1 to download, error: disk full, "
                                           "2 paths cannot be applied")
    assert doc["conflicts"] == ["a.conflict-x"]
    assert doc["receipts"] == [{"peer": "p", "peer_name": "nas", "length": 2, "time": 10, "backed_up": False,
                                "quota_full": False, "audit": {}}]
    assert "receipts" not in group_document({"name": "g"}, {}, None, None)  # a backup peer has no receipts


def test_dashboard_document_lists_each_groups_connected_peers_and_members() -> None:
    status = {"groups": [{"name": "a"}, {"name": "b"}],
              "peers": [{"peer_id": "p1", "groups": ["a"]}, {"peer_id": "p2", "groups": ["a", "b"]}]}
    doc = dashboard_document(status, [{"kind": "connected"}], {"a": [{"peer_id": "me"}]})
    assert [g["connected"] for g in doc["groups"]] == [["p1", "p2"], ["p2"]]
    assert [g["members"] for g in doc["groups"]] == [[{"peer_id": "me"}], []]
    assert "connected" not in status["groups"][0]  # the input is not changed


def _channel(group: object, live: bool, missing: tuple[int, bool], remote_id: int | None = 1) -> SimpleNamespace:
    return SimpleNamespace(group=group, live=live, missing=lambda: missing, remote_id=remote_id)


def test_netview_progress_counts_only_live_channels_of_the_group() -> None:
    g, other = SimpleNamespace(name="g"), SimpleNamespace(name="o")
    peer = SimpleNamespace(channels={1: _channel(g, True, (3, True)), 2: _channel(g, False, (9, False)),
                                     3: _channel(other, True, (5, False))})
    node = SimpleNamespace(peers={b"p": peer})
    assert netview.group_progress(node, g) == netview.Progress(1, 3, True)
    assert netview.peer_groups(peer) == ("g", "o")
    assert netview.carries_group(peer, other) and not netview.carries_group(SimpleNamespace(channels={}), g)
