"""The browser tests' helpers: a stand-in for the user's browser, for ``cobox open`` (it records
its command line, what any user of the machine sees in the process list, and opens nothing);
Debian's chromium for Playwright; axe-core's accessibility check."""

from __future__ import annotations

import json
import shutil
import sys
import webbrowser
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import until


def fake_browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make ``cobox open`` (Python's ``webbrowser``, through ``$BROWSER``) start a program that
    writes its arguments as JSON to the returned path."""
    argv = tmp_path / "browser-argv.json"
    script = tmp_path / "fake-browser"
    script.write_text(f"#!{sys.executable}\nimport json, os, sys\n"  # whole or not at all: written, then renamed
                      f"json.dump(sys.argv[1:], open({str(argv)!r} + '.tmp', 'w'))\n"
                      f"os.replace({str(argv)!r} + '.tmp', {str(argv)!r})\n")
    script.chmod(0o700)
    monkeypatch.setenv("BROWSER", str(script))
    # ``webbrowser`` reads $BROWSER once per process: a client command run in this process
    # (tests.integration.inproc) would otherwise start the stand-in of an earlier test.
    monkeypatch.setattr(webbrowser, "_tryorder", None)
    monkeypatch.setattr(webbrowser, "_browsers", {})
    return argv


async def browser_argv(argv: Path, timeout: float = 20) -> list[str]:
    """What the fake browser was started with: ``webbrowser`` starts it in the background, so
    ``cobox open`` may return before it has written its file."""
    await until(argv.exists, timeout, "the browser to start")
    return list(json.loads(argv.read_text()))


# -- the browser tests' shared pieces (tests/integration/test_dashboard*.py) --------------------------

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"  # screenshots (gitignored)
AXE = ROOT / "build" / "node_modules" / "axe-core" / "axe.min.js"  # installed by .ci/deps with npm
LIVE = 30_000  # ms: bound on every wait for something that replication makes happen


def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("the browser tests need Debian's chromium: apt-get install chromium "
                    "(.ci/run installs it); no browser is downloaded")
    return path


def playwright() -> Any:
    try:
        from playwright import async_api
    except ImportError:
        pytest.fail("the browser tests need the playwright package (pip install -e '.[test]')")
    return async_api


async def axe_violations(page: Any, *, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
    """Run axe-core in ``page`` (its context must bypass the page's CSP to inject the script);
    the violations of the given impacts, one line each."""
    if not AXE.exists():
        pytest.fail(f"the accessibility check needs axe-core at {AXE}: run `bash .ci/deps` (npm install axe-core)")
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.add_script_tag(content=AXE.read_text(encoding="utf-8"))
    result = await page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
                                 ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
                                 " nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))")
    return [f"{v['impact']}: {v['id']} ({v['help']}) at {v['nodes']}" for v in result if v["impact"] in impacts]
