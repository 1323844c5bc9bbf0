"""What a person reads from the CLI: sizes in binary units, rates, times ago, state in files and
bytes; ``--json`` keeps the API's exact numbers. Printed from literal API documents."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from cobox.commands_folders import folder
from cobox.commands_groups import backup_status, sync_done_text
from cobox.commands_show import ago_text, duration_text, rate_text, show_status, size_text, sync_state

NOW = 1_800_000_000.0


def test_sizes_rates_and_times() -> None:
    assert size_text(300025) == "293 KiB"
    assert [size_text(n) for n in (0, 1, 1023, 1024, 1536, 40 * 2**20, 5 * 2**40)] == [
        "0 bytes", "1 byte", "1023 bytes", "1.0 KiB", "1.5 KiB", "40 MiB", "5.0 TiB"]
    assert rate_text(2.5 * 2**20) == "2.5 MiB/s"
    assert ago_text(NOW - 180, NOW) == "3 minutes ago" and ago_text(NOW - 1, NOW) == "just now"
    assert ago_text(NOW - 3600 * 26, NOW) == "1 day 2 hours ago" and ago_text(NOW + 60, NOW) == "in 1 minute"
    assert duration_text(3 * 3600 + 5 * 60) == "3 hours 5 minutes" and duration_text(42) == "42 seconds"


def test_sync_state_in_files_and_bytes() -> None:
    s = {"synced": False, "peers": 2, "missing": 7, "folder_pending": 3, "folder_pending_bytes": 40 * 2**20}
    assert sync_state(s) == "3 files to download, 40 MiB"
    assert sync_state({**s, "folder_pending": 0}) == "catching up (7 entries to fetch)"
    assert sync_state({**s, "synced": True}) == "in sync" and sync_state({**s, "peers": 0}) == "no peers"
    done = {"peers": 1, "have": 12, "folder_bytes": 300025, "folder_pending_bytes": 0, "folder_files": 3}
    assert sync_done_text(done) == "in sync (3 files, 293 KiB, 1 peer)"


def _status() -> dict[str, Any]:
    feeds = [{"key": "ab" * 32, "length": 5, "have": 5, "own": True}]
    sync = {"synced": False, "peers": 1, "missing": 2, "folder_pending": 1, "folder_pending_bytes": 300025,
            "have": 5}
    folder_doc = {"path": "/f", "files": 2, "bytes": 3 * 2**20, "pending_down": 1, "status": "raw",
                  "error": "", "failed_count": 0, "last_error": "", "last_error_time": None}
    return {"peer_id": "cd" * 32, "home": "/h", "pid": 1, "uptime": 180.4, "advertised": [], "dht": {"enabled": False},
            "lan": {"enabled": True}, "bytes_sent": 300025, "bytes_received": 5 * 2**20,
            "groups": [{"name": "photos", "role": "member", "feeds": feeds, "sync": sync, "folders": [folder_doc]}],
            "peers": [], "services": []}


def test_status_reads_in_units_and_feeds_only_with_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    show_status(_status(), as_json=False)
    out = capsys.readouterr().out
    assert "up 3 minutes" in out and "293 KiB out, 5.0 MiB in" in out
    assert "photos  (member, 1 peer, 1 file to download, 293 KiB)" in out
    assert "folder /f: 2 files, 3.0 MiB, 1 to download" in out
    assert "feed " not in out and "bytes" not in out
    show_status(_status(), as_json=False, verbose=True)
    assert "feed abababababababab  length 5  held 5 (this device)" in capsys.readouterr().out


def test_status_json_keeps_exact_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    show_status(_status(), as_json=True)
    doc = json.loads(capsys.readouterr().out)
    assert doc["bytes_sent"] == 300025 and doc["uptime"] == 180.4


class FakeApi:
    def __init__(self, doc: Any) -> None:
        self.doc = doc

    async def get(self, path: str) -> Any:
        return self.doc


async def test_folder_status_in_units(capsys: pytest.CaptureFixture[str]) -> None:
    doc = {"path": "/f", "files": 3, "bytes": 300025, "pending_up": 0, "pending_down": 2,
           "pending_down_bytes": 40 * 2**20, "conflicts": [], "error": "", "last_error": "disk full",
           "last_error_time": 1.0}
    args = argparse.Namespace(action="status", group="g", json=False)
    await folder(FakeApi(doc), args)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert out.startswith("/f: 3 files, 293 KiB, 0 to upload, 2 to download (40 MiB), 0 conflicts")
    assert "last error (recovered, " in out and " ago): disk full" in out
    await folder(FakeApi({**doc, "pending_down": 0, "pending_down_bytes": 0}), args)  # type: ignore[arg-type]
    assert capsys.readouterr().out.startswith("/f: 3 files, 293 KiB, in sync, 0 conflicts")
    await folder(FakeApi(doc), argparse.Namespace(action="status", group="g", json=True))  # type: ignore[arg-type]
    assert json.loads(capsys.readouterr().out)["bytes"] == 300025


async def test_backup_status_says_how_long_ago_the_audit_was(capsys: pytest.CaptureFixture[str]) -> None:
    import time

    audit = {"state": "verified", "time": time.time() - 180, "samples": 8}
    peers = [{"peer": "ef" * 32, "backed_up": True, "quota_full": False,
              "feeds": [{"feed": "ab" * 32, "held": 5, "length": 5, "audit": audit}]}]
    await backup_status(FakeApi(peers), "g", False)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "claimed 5/5, verified by audit at " in out and "(3 minutes ago, 8 samples)" in out
