"""The web dashboard in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

Two daemon processes on loopback. The page logs in with a one-time link from ``cobox open``,
creates a group, and watches a second daemon join, connect and append, live (server-sent
events, no reload). A screenshot is kept in ``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.integration.daemons import ROOT, ok

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts"
LIVE = 20_000  # ms: bound on every wait for something that replication makes happen


def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("the browser tests need Debian's chromium: apt-get install chromium "
                    "(.ci/run installs it); no browser is downloaded")
    return path


async def test_dashboard_logs_in_creates_a_group_and_updates_live(daemons):
    try:
        from playwright.async_api import async_playwright, expect
    except ImportError:
        pytest.fail("the browser tests need the playwright package (pip install -e '.[test]')")
    executable = chromium()
    a, b = await daemons("a"), await daemons("b")
    link = (await ok(a.home, "open", "--no-browser")).strip()
    base = link.split("/login")[0]
    assert link.startswith("http://127.0.0.1:") and "/login?code=" in link
    a_status = await a.status()

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1100})
            page.set_default_timeout(10_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            failed: list[str] = []  # responses >= 400 but the one the bad URI asks for
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}")
                    if r.status >= 400 and not r.url.endswith("/v1/groups/join") else None)
            outside: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(base) else outside.append(r.url))

            # Log in: the code is traded for a cookie and gone from the address bar.
            await page.goto(link)
            assert page.url == base + "/", page.url
            await expect(page.locator("#peer-id")).to_have_text(a_status["peer_id"])
            await expect(page.locator("#live")).to_have_text("live")
            await expect(page.locator("#lan")).to_have_text("off")

            # Create a group: the invite is shown with a QR code and a copy button.
            await page.fill("#create-name", "g")
            await page.click("#create-form button[type=submit]")
            await expect(page.locator("#invite-uri")).to_have_value(re.compile(r"^cobox://join/.+name=g"))
            uri = await page.input_value("#invite-uri")
            await page.wait_for_function(
                "() => { const i = document.querySelector('#invite-qr'); return i.complete && i.naturalWidth > 0 }")
            await expect(page.locator("#copy-invite")).to_be_visible()
            group = page.locator('article.group[data-group="g"]')
            await expect(group.locator(".sync")).to_have_text("no peers connected")

            # A bad URI: an inline error in plain words, nothing else changes.
            await page.fill("#join-uri", "cobox://join/abc")
            await page.click("#join-form button[type=submit]")
            join_error = page.locator("#join-form .error")
            await expect(join_error).to_be_visible()
            await expect(join_error).to_contain_text(re.compile("invite|URI", re.I))
            await page.fill("#seed-uri", "https://example.org")
            await page.click("#seed-form button[type=submit]")
            await expect(page.locator("#seed-form .error")).to_contain_text("cobox://seed/")

            # A second daemon joins through the API and connects: the peer appears live.
            await ok(b.home, "group", "join", uri)
            await ok(b.home, "peers", "add", await a.address())
            b_id = (await b.status())["peer_id"]
            await expect(group.locator(".connected")).to_contain_text(b_id[:16], timeout=LIVE)
            await expect(page.locator("#peer-count")).to_have_text("1 connected")

            # B appends an entry: A replicates it and the counts update without a reload.
            await ok(b.home, "log", "append", "g", "hello from b")
            await expect(group.locator(".entries")).to_have_text("1 entry", timeout=LIVE)
            await expect(group.locator(".members")).to_contain_text(b_id[:16], timeout=LIVE)
            await expect(group.locator(".sync")).to_have_text("in sync", timeout=LIVE)
            await expect(page.locator("#legend")).to_contain_text("g")
            await expect(page.locator("#plot polyline")).to_have_count(1, timeout=LIVE)
            assert "code=" not in page.url
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            # Leave: two clicks (the first asks), then the group is gone, live.
            leave = group.locator("button.leave")
            await leave.click()
            await expect(leave).to_have_text("Really leave g?")
            await leave.click()
            await expect(group).to_have_count(0, timeout=LIVE)
            await expect(page.locator("#no-groups")).to_be_visible()

            # A used link, a wrong code, no session: refused, with the way to log in.
            other = await browser.new_context()
            stranger = await other.new_page()
            for url, words in ((link, "not valid"), (base + "/login?code=wrong", "not valid"),
                               (base + "/", "not logged in")):
                r = await stranger.goto(url)
                assert r is not None and r.status == 401, url
                await expect(stranger.locator("#login-message")).to_contain_text(words)
                await expect(stranger.locator("body")).to_contain_text("cobox open")
            r = await stranger.request.get(base + "/v1/status", headers={"Authorization": "Bearer wrong"})
            assert r.status == 401
            await other.close()
            assert not errors, errors
            assert not failed, failed
            assert not outside, f"the page loaded something from elsewhere: {outside}"
        finally:
            await browser.close()
