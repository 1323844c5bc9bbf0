"""Folders from the dashboard, in a real browser (Debian's chromium driven by Playwright).

Two daemon processes on loopback, each with its own logged-in page. Each page adds its folder
(path typed in, checked by the daemon: a relative path and a missing one are refused in words);
then B connects to A and B's folder goes Syncing -> Up to Date while A's files arrive on B's disk
(the page records the states a folder went through in ``data-states``). A file changed on A
reaches B; B's page restores the old version from the file's history, and it comes back on both
disks. Then a conflict (both edit while B is stopped) is resolved from A's page with "keep
both". The page is checked with axe-core (no serious or critical violations) in light and dark
themes and at 390 px wide, where nothing may overflow sideways (``scrollWidth <= 390``).
Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from tests.integration.browser import ARTIFACTS, CHROMIUM_ARGS, LIVE, axe_violations, chromium, playwright
from tests.integration.daemons import Daemon, ok

BIG = 40 << 20  # bytes: a transfer long enough to be seen syncing


async def _login(browser: Any, home: Path, expect: Any, **context: Any) -> Any:
    link = (await ok(home, "open", "--no-browser")).strip()
    ctx = await browser.new_context(**{"viewport": {"width": 1280, "height": 1000}, **context})
    page = await ctx.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors  # type: ignore[attr-defined]
    await page.goto(link)
    await expect(page.locator("#live")).to_have_text("live")
    return page


async def _add_folder(page: Any, expect: Any, group: str, path: str) -> None:
    await page.click("#add-folder-open")
    await page.select_option("#add-folder-group", group)
    await page.fill("#add-folder-path", path)
    await page.click("#add-folder-form button[type=submit]")


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


async def test_folders_added_from_the_page_sync_restore_and_resolve(daemons, tmp_path):
    pw_api = playwright()
    expect = pw_api.expect
    executable = chromium()
    a, b = await daemons("a"), await daemons("b")
    out = await ok(a.home, "group", "create", "family")
    uri = next(w for w in out.split() if w.startswith("cobox://join/"))
    await ok(b.home, "group", "join", uri)
    fa, fb = tmp_path / "fa", tmp_path / "fb"
    fa.mkdir()
    fb.mkdir()
    (fa / "notes.txt").write_bytes(b"first version")
    (fa / "big.bin").write_bytes(os.urandom(BIG))
    ARTIFACTS.mkdir(exist_ok=True)

    async with pw_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            pa = await _login(browser, a.home, expect)
            pb = await _login(browser, b.home, expect)

            # The daemon checks the path: a relative one and a missing one are refused in words.
            await _add_folder(pb, expect, "family", "fb")
            error = pb.locator("#add-folder-form .error")
            await expect(error).to_contain_text("full path")
            await pb.fill("#add-folder-path", str(tmp_path / "nowhere"))
            await pb.click("#add-folder-form button[type=submit]")
            await expect(error).to_contain_text("not a directory")
            await pb.fill("#add-folder-path", str(fb))
            await pb.click("#add-folder-form button[type=submit]")
            await expect(pb.locator("#add-folder-form")).to_be_hidden()
            fold_b = pb.locator('details.folder[data-folder="family"]')
            await expect(fold_b.locator("summary .state")).to_have_text("Up to Date", timeout=LIVE)

            await _add_folder(pa, expect, "family", str(fa))
            fold_a = pa.locator('details.folder[data-folder="family"]')
            await expect(fold_a.locator(".folder-files")).to_have_text("2 files, 40 MiB", timeout=LIVE)
            await expect(fold_a.locator("summary .state")).to_have_text("Up to Date", timeout=LIVE)
            await expect(pa.locator("#events")).to_contain_text("family: folder added")

            # B connects: its folder goes Syncing -> Up to Date and A's files land on B's disk.
            await ok(b.home, "peers", "add", await a.address())
            await expect(fold_b.locator(".folder-files")).to_have_text("2 files, 40 MiB", timeout=LIVE)
            await expect(fold_b.locator("summary .state")).to_have_text("Up to Date", timeout=LIVE)
            states = (await fold_b.get_attribute("data-states") or "").split(",")
            assert "Syncing" in states and states[-1] == "Up to Date", states
            assert states.index("Syncing") < len(states) - 1
            await _until(lambda: _tree(fb) == _tree(fa), "A's files on B's disk")
            b_id = (await b.status())["peer_id"]
            device = pa.locator(f'#devices [data-device="{b_id}"]')
            await expect(device.locator("summary .state")).to_have_text("Connected (direct LAN)")
            await expect(fold_a.locator(".folder-state")).to_have_text("Up to Date")
            await pa.screenshot(path=str(ARTIFACTS / "dashboard-folders.png"), full_page=True)

            # A changes the file; B gets it; B's page restores the first version from its history.
            (fa / "notes.txt").write_bytes(b"second version, longer")
            await _until_file(fb / "notes.txt", b"second version, longer")
            await fold_b.locator(".versions-btn").click()
            dialog = pb.locator("#versions-dialog")
            await expect(dialog).to_be_visible()
            await pb.fill("#versions-search", "notes")
            await dialog.locator('button[data-file="notes.txt"]').click()
            rows = dialog.locator("#versions-list tr")
            await expect(rows).to_have_count(2)
            await expect(rows.first).to_contain_text("current")
            await pb.screenshot(path=str(ARTIFACTS / "dashboard-versions.png"))
            await rows.nth(1).locator(".restore-btn").click()
            await expect(pb.locator("#versions-done")).to_contain_text("Restored notes.txt")
            await expect(rows).to_have_count(3)
            await _until_file(fb / "notes.txt", b"first version")
            await _until_file(fa / "notes.txt", b"first version")
            await pb.keyboard.press("Escape")
            await expect(dialog).to_be_hidden()

            # A conflict: both edit while B is stopped; A's page resolves it, keeping both.
            await b.stop()
            (fa / "notes.txt").write_bytes(b"A's edit")
            await expect(fold_a.locator(".folder-files")).to_have_text("2 files, 40 MiB")
            await _until_state(a, lambda f: f["pending_up"] == 0 and f["bytes"] == BIG + 8)
            (fb / "notes.txt").write_bytes(b"B's edit while offline")
            b2 = await Daemon(b.home, b.extra).start()
            try:
                await ok(b2.home, "peers", "add", await a.address())
                resolve = fold_a.locator(".conflicts-btn")
                await expect(resolve).to_have_text("Resolve 1 conflict", timeout=LIVE)
                await expect(pa.locator("#events")).to_contain_text("family: 1 conflict to resolve")
                await resolve.click()
                cdialog = pa.locator("#conflicts-dialog")
                await expect(cdialog.locator(".conflict")).to_have_count(1)
                await expect(cdialog).to_contain_text("notes.txt")
                await pa.screenshot(path=str(ARTIFACTS / "dashboard-conflict.png"))
                copy = await cdialog.locator(".conflict").get_attribute("data-copy")
                assert copy and ".conflict-" in copy
                await cdialog.locator('button[data-keep="both"]').click()
                await expect(pa.locator("#conflicts-done")).to_contain_text("kept both")
                await expect(cdialog).to_contain_text("No conflicts left.")
                await pa.keyboard.press("Escape")
                await expect(fold_a.locator(".folder-conflicts")).to_have_text("none", timeout=LIVE)
                await expect(fold_a.locator(".folder-files")).to_have_text("3 files, 40 MiB", timeout=LIVE)
                await _until(lambda: _tree(fb) == _tree(fa) and len(_tree(fa)) == 3, "both disks to hold both edits")
                assert {_tree(fa)["notes.txt"], _tree(fa)[copy]} == {b"A's edit", b"B's edit while offline"}
                await _until_state(b2, lambda f: not f["conflicts"] and f["files"] == 3)
            finally:
                await b2.stop()
            assert not pa.errors and not pb.errors, (pa.errors, pb.errors)

            # Accessibility (axe-core) and the narrow screen, light and dark.
            for scheme in ("light", "dark"):
                page = await _login(browser, a.home, expect, bypass_csp=True, color_scheme=scheme)
                await expect(page.locator('details.folder[data-folder="family"] summary .state')).to_be_visible()
                assert await axe_violations(page) == [], scheme
                if scheme == "light":
                    await _keyboard_only(page, expect)
                await page.set_viewport_size({"width": 390, "height": 844})
                await page.locator('details.device').first.locator("summary").click()  # open a device row too
                assert await page.evaluate("() => document.documentElement.scrollWidth") <= 390
                assert await axe_violations(page) == [], f"{scheme} at 390 px"
                await page.screenshot(path=str(ARTIFACTS / f"dashboard-390-{scheme}.png"), full_page=True)
                await page.locator('details.folder[data-folder="family"] .versions-btn').click()
                await page.locator('#versions-files button[data-file="notes.txt"]').click()
                await expect(page.locator("#versions-list tr").first).to_be_visible()
                assert await page.evaluate("() => document.documentElement.scrollWidth") <= 390
                assert await axe_violations(page) == [], f"{scheme}, the versions dialog"
                await page.context.close()
        finally:
            await browser.close()


async def _keyboard_only(page: Any, expect: Any) -> None:
    """Reach a folder's Versions button with Tab alone, open the dialog with Enter (focus lands in
    its search field), close it with Escape."""
    await page.locator("body").focus()
    for _ in range(60):  # bounded: the button is a few dozen stops in
        await page.keyboard.press("Tab")
        if await page.evaluate("() => document.activeElement.classList.contains('versions-btn')"):
            break
    else:
        raise AssertionError("the Versions button cannot be reached with the keyboard")
    await page.keyboard.press("Enter")
    await expect(page.locator("#versions-dialog")).to_be_visible()
    assert await page.evaluate("() => document.activeElement.id") == "versions-search"
    await page.keyboard.press("Escape")
    await expect(page.locator("#versions-dialog")).to_be_hidden()


async def _until(check: Any, what: str, timeout: float = LIVE / 1000) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def _until_file(path: Path, content: bytes) -> None:
    await _until(lambda: path.exists() and path.read_bytes() == content, f"{path} to hold {content!r}")


async def _until_state(d: Daemon, check: Any, timeout: float = LIVE / 1000) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not check((await d.status())["folders"][0]):
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for the folder of {d.home.name}") from None
