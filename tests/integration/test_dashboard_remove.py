"""Removing a device from the dashboard, in a real browser: the first click on "Remove" shows,
next to the button, what removal does and does NOT do (the CLI's words: the device keeps what
it already synced); the second click removes it, and the removed daemon is told (issue 17.4)."""

from __future__ import annotations

import json

from tests.integration.browser import ARTIFACTS, CHROMIUM_ARGS, LIVE, chromium, playwright
from tests.integration.daemons import ok
from tests.integration.test_dashboard_controls import _login, _pair
from tests.integration.test_device_remove import until


async def b_removed(b) -> bool:
    groups = json.loads(await ok(b.home, "status", "--json"))["groups"]
    return any("removed" in g for g in groups if g["name"] == "family")


async def test_the_remove_confirmation_says_what_removal_does_not_do(daemons, tmp_path):
    pw_api = playwright()
    expect = pw_api.expect
    a, b, _, _ = await _pair(daemons, tmp_path)
    b_id = (await b.status())["peer_id"]
    async with pw_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, timeout=30_000)
        try:
            page = await _login(browser, a.home, expect)
            assert (await page.evaluate("() => status.features")).get("remove_device")
            device = page.locator(f'#devices details.device[data-device="{b_id}"]')
            await device.locator("summary").click()
            button = device.locator("button.danger", has_text="Remove from family")
            await expect(button).to_be_visible(timeout=LIVE)
            await expect(device.locator(".removal-note")).to_have_count(0)  # only once asked
            await button.click()
            note = device.locator(".removal-note")
            await expect(note).to_be_visible()
            await expect(note).to_contain_text("does NOT take back")
            await expect(note).to_contain_text("stays on it")
            armed = device.locator("button.danger.armed")
            await expect(armed).to_have_text("Click again to remove it from family")
            await page.screenshot(path=str(ARTIFACTS / "dashboard-remove-confirm.png"), full_page=True)
            await armed.click()
            await until("B to be told it was removed", lambda: b_removed(b))
            await expect(device.locator(".removal-note")).to_have_count(0)
        finally:
            await browser.close()
