"""A stand-in for the user's browser, for ``cobox open``: it records its command line (what any
user of the machine sees in the process list) and opens nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


def fake_browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make ``cobox open`` (Python's ``webbrowser``, through ``$BROWSER``) start a program that
    writes its arguments as JSON to the returned path."""
    argv = tmp_path / "browser-argv.json"
    script = tmp_path / "fake-browser"
    script.write_text(f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(argv)!r}, 'w'))\n")
    script.chmod(0o700)
    monkeypatch.setenv("BROWSER", str(script))
    return argv
