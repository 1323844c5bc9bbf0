"""The everyday controls from the dashboard, in a real browser: pause and resume a folder, a group
and a device, and a bandwidth limit that the transfer then keeps to (issue 19.1, 19.2, 19.9).

These need the control API's ``POST /v1/pause``, ``POST /v1/resume`` and ``PUT /v1/limits`` (the
"controls" work): the page shows those buttons only when the daemon offers the routes
(``features`` in the status document), so the tests fail, in words, where they are missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from tests.integration.browser import ARTIFACTS, CHROMIUM_ARGS, LIVE, chromium, playwright
from tests.integration.daemons import ok

LIMIT_KIB = 160  # KiB/s: B's download limit in the bandwidth test
PAYLOAD = 2 << 20  # bytes sent through the limit


async def _login(browser: Any, home: Path, expect: Any) -> Any:
    ARTIFACTS.mkdir(exist_ok=True)
    link = (await ok(home, "open", "--no-browser")).strip()
    ctx = await browser.new_context(viewport={"width": 1280, "height": 1000})
    page = await ctx.new_page()
    page.set_default_timeout(15_000)
    await page.goto(link)
    await expect(page.locator("#live")).to_have_text("live")
    await page.wait_for_function("() => status !== null")
    features = await page.evaluate("() => status.features")
    missing = [name for name in ("pause", "resume", "limits") if not features.get(name)]
    assert not missing, f"the daemon offers no route for {missing} (POST /v1/pause, /v1/resume, PUT /v1/limits)"
    return page


async def _pair(daemons: Any, tmp_path: Path) -> tuple[Any, Any, Path, Path]:
    """Two daemons in group "family", each with a folder, connected and up to date."""
    a, b = await daemons("a"), await daemons("b")
    out = await ok(a.home, "group", "create", "family")
    await ok(b.home, "group", "join", next(w for w in out.split() if w.startswith("cobox://join/")))
    fa, fb = tmp_path / "fa", tmp_path / "fb"
    fa.mkdir()
    fb.mkdir()
    (fa / "hello.txt").write_bytes(b"hello")
    await ok(a.home, "folder", "add", "family", str(fa))
    await ok(b.home, "folder", "add", "family", str(fb))
    await ok(b.home, "peers", "add", await a.address())
    await _until(lambda: (fb / "hello.txt").exists(), "the first file on B")
    return a, b, fa, fb


async def _until(check: Any, what: str, timeout: float = LIVE / 1000) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_pause_and_resume_a_folder_a_group_and_a_device_from_the_page(daemons, tmp_path):
    pw_api = playwright()
    expect = pw_api.expect
    a, b, fa, fb = await _pair(daemons, tmp_path)
    b_id = (await b.status())["peer_id"]
    async with pw_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, timeout=30_000)
        try:
            page = await _login(browser, a.home, expect)
            folder = page.locator('details.folder[data-folder="family"]')
            await expect(folder.locator("summary .state")).to_have_text("Up to Date", timeout=LIVE)
            pause = folder.locator(".pause-btn")
            await expect(pause).to_have_text("Pause")  # offered: the daemon has POST /v1/pause

            # The folder: paused in words on the page and in the daemon; a new file waits; resumed, it goes.
            await pause.click()
            await expect(folder.locator("summary .state")).to_have_text("Paused", timeout=LIVE)
            await expect(folder.locator(".pause-btn")).to_have_text("Resume")
            pauses = json.loads(await ok(a.home, "status", "--json"))["paused"]
            assert pauses["folders"] == ["family"], pauses
            (fa / "later.txt").write_bytes(b"written while paused")
            await page.screenshot(path=str(ARTIFACTS / "dashboard-paused.png"), full_page=True)
            await folder.locator(".pause-btn").click()
            await expect(folder.locator("summary .state")).to_have_text("Up to Date", timeout=LIVE)
            await _until(lambda: (fb / "later.txt").exists(), "the file written while paused to reach B")

            # The group.
            group = page.locator('article.group[data-group="family"]')
            await group.locator(".pause-btn").click()
            await expect(group.locator(".sync")).to_have_text("Paused", timeout=LIVE)
            await expect(folder.locator("summary .state")).to_have_text("Paused")
            await group.locator(".pause-btn").click()
            await expect(group.locator(".sync")).to_have_text("Up to Date", timeout=LIVE)

            # The device: disconnected while paused, connected again once resumed.
            device = page.locator(f'#devices details.device[data-device="{b_id}"]')
            await device.locator("summary").click()
            await device.locator(".pause-btn").click()
            await expect(device.locator("summary .state")).to_have_text("Paused", timeout=LIVE)
            await expect(page.locator("#peer-count")).to_have_text("No device connected", timeout=LIVE)
            await device.locator(".pause-btn").click()
            await ok(b.home, "peers", "add", await a.address())
            await expect(device.locator("summary .state")).to_have_text("Connected (direct LAN)", timeout=LIVE)
        finally:
            await browser.close()


async def test_a_bandwidth_limit_set_in_the_page_is_kept_by_the_transfer(daemons, tmp_path):
    pw_api = playwright()
    expect = pw_api.expect
    a, b, fa, fb = await _pair(daemons, tmp_path)
    async with pw_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, timeout=30_000)
        try:
            page = await _login(browser, b.home, expect)
            box = page.locator("#limits-box")
            await expect(box).to_be_visible()  # offered: the daemon has PUT /v1/limits
            await page.fill("#limit-recv", str(LIMIT_KIB))
            await page.check("#limit-lan")  # loopback counts as the LAN, exempt by default
            await box.locator("button[type=submit]").click()
            await expect(page.locator("#limits-now")).to_contain_text(f"download {LIMIT_KIB} KiB/s", timeout=LIVE)
            limits = json.loads(await ok(b.home, "status", "--json"))["limits"]
            assert limits["max_recv_kbps"] == LIMIT_KIB and limits["limit_lan"] is True, limits

            start = time.monotonic()
            (fa / "big.bin").write_bytes(os.urandom(PAYLOAD))
            shown: list[float] = []  # the download rate the page shows, in KiB/s, while it arrives
            target = fb / "big.bin"
            async with asyncio.timeout(PAYLOAD / (LIMIT_KIB << 10) * 4 + 30):
                while not (target.exists() and target.stat().st_size == PAYLOAD):
                    text = await page.locator("#rate-in").text_content() or ""
                    shown.append(_kib(text.split(" (")[0]))
                    await asyncio.sleep(0.5)
            elapsed = time.monotonic() - start
            await page.screenshot(path=str(ARTIFACTS / "dashboard-limited.png"), full_page=True)
            # the file cannot have come faster than the limit allows (10% margin for the bucket's burst)
            assert elapsed >= PAYLOAD / (LIMIT_KIB * 1024 * 1.1), elapsed
            moving = [r for r in shown if r > 0]
            assert moving, "the page never showed the download moving"
            assert statistics.median(moving) <= LIMIT_KIB * 1.1, shown
        finally:
            await browser.close()


def _kib(text: str) -> float:
    """ "1.5 MiB/s" -> 1536.0 (KiB/s)."""
    number, unit = text.replace("/s", "").split()
    return float(number) * {"B": 1 / 1024, "KiB": 1, "MiB": 1024, "GiB": 1 << 20}[unit]
