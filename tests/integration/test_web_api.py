"""The control API endpoints the dashboard uses, against a real daemon process on loopback:
login links, session cookies, the CSRF header, server-sent events, QR codes."""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from cobox.web.routes import qr_svg
from tests.integration.daemons import ok


@pytest.fixture
async def api(daemons) -> AsyncIterator:
    """(daemon, base URL, bearer headers, an HTTP session without cookies kept)."""
    d = await daemons("a")
    port = (await d.status())["api"]["port"]
    token = (d.home / "api.token").read_text().strip()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15),
                                     cookie_jar=aiohttp.DummyCookieJar()) as http:
        yield d, f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}, http


async def login(http: aiohttp.ClientSession, base: str, auth: dict[str, str]) -> tuple[dict[str, str], str]:
    """Log in as the page does; return the cookie header and the page's CSRF value."""
    async with http.post(f"{base}/v1/login-link", headers=auth) as r:
        assert r.status == 201
        link = (await r.json())["url"]
    async with http.get(link, allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/"
        morsel = next(iter(r.cookies.values()))
        cookie = {"Cookie": f"{morsel.key}={morsel.value}"}
    async with http.get(f"{base}/", headers=cookie) as r:
        assert r.status == 200
        html = await r.text()
    match = re.search(r'name="cobox-csrf" content="([^"]+)"', html)
    assert match is not None
    return cookie, match.group(1)


async def events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict]]:
    """The server-sent events of a response, as (event, data)."""
    name, data = "", ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif not line and name:
            yield name, json.loads(data)
            name, data = "", ""


async def test_login_link_is_single_use_needs_the_token_and_sets_a_strict_cookie(api):
    d, base, auth, http = api
    port = base.rsplit(":", 1)[1]
    async with http.post(f"{base}/v1/login-link") as r:
        assert r.status == 401
    async with http.post(f"{base}/v1/login-link", headers=auth) as r:
        assert r.status == 201
        body = await r.json()
    assert body["url"].startswith(f"{base}/login?code=") and body["expires_in"] == 60
    async with http.get(body["url"], allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/"
        set_cookie = r.headers["Set-Cookie"]
    assert set_cookie.startswith(f"cobox_session_{port}=")
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie
    async with http.get(body["url"], allow_redirects=False) as r:  # used once already
        assert r.status == 401 and "not valid" in await r.text()
    async with http.get(f"{base}/login?code=nonsense", allow_redirects=False) as r:
        assert r.status == 401
    # A session cannot mint login links: that takes the token.
    cookie, csrf = await login(http, base, auth)
    async with http.post(f"{base}/v1/login-link", headers={**cookie, "X-Cobox-CSRF": csrf}) as r:
        assert r.status == 401
    # `cobox open --no-browser` prints a working link; neither it nor the token is logged.
    link = (await ok(d.home, "open", "--no-browser")).strip()
    async with http.get(link, allow_redirects=False) as r:
        assert r.status == 303
    code = link.split("code=")[1]
    token = auth["Authorization"][7:]
    assert not any(code in line or token in line for line in d.output)


async def test_a_session_cookie_authenticates_and_changes_need_the_csrf_header(api):
    d, base, auth, http = api
    async with http.get(f"{base}/v1/status") as r:
        assert r.status == 401
    async with http.get(f"{base}/") as r:
        assert r.status == 401 and "cobox open" in await r.text()
    cookie, csrf = await login(http, base, auth)
    async with http.get(f"{base}/v1/status", headers=cookie) as r:
        assert r.status == 200 and "peer_id" in await r.json()
    async with http.get(f"{base}/static/app.js") as r:  # assets hold no data
        assert r.status == 200 and r.content_type == "text/javascript"
    # Changes: the cookie alone is not enough.
    async with http.post(f"{base}/v1/groups", headers=cookie, json={"name": "m"}) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "csrf_required"
    async with http.post(f"{base}/v1/groups", headers={**cookie, "X-Cobox-CSRF": "guess"}, json={"name": "m"}) as r:
        assert r.status == 403
    with_csrf = {**cookie, "X-Cobox-CSRF": csrf}
    async with http.post(f"{base}/v1/groups", headers={**with_csrf, "Origin": "http://evil.example"},
                         json={"name": "m"}) as r:
        assert r.status == 403
    async with http.post(f"{base}/v1/groups", headers=with_csrf, json={"name": "m"}) as r:
        assert r.status == 201 and (await r.json())["invite"].startswith("cobox://join/")
    async with http.post(f"{base}/v1/groups/join", headers=with_csrf, json={"uri": "cobox://join/abc"}) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_uri"
    # The cookie counts only for this port on loopback (no DNS rebinding).
    port = base.rsplit(":", 1)[1]
    async with http.get(f"{base}/v1/status", headers={**cookie, "Host": f"evil.example:{port}"}) as r:
        assert r.status == 401
    # Logging out ends the session.
    async with http.post(f"{base}/v1/logout", headers=with_csrf) as r:
        assert r.status == 200
    async with http.get(f"{base}/v1/status", headers=cookie) as r:
        assert r.status == 401


async def test_events_stream_pushes_the_status_and_throughput_samples(api):
    d, base, auth, http = api
    stream_timeout = aiohttp.ClientTimeout(total=20)
    async with http.get(f"{base}/v1/events", headers=auth, timeout=stream_timeout) as r:
        assert r.status == 200 and r.content_type == "text/event-stream"
        it = events(r)
        name, history = await anext(it)
        assert name == "throughput" and history["interval"] == 1.0
        name, status = await anext(it)
        assert name == "status" and status["peer_id"] == (await d.status())["peer_id"]
        assert status["groups"] == []
        await ok(d.home, "group", "create", "m")
        await ok(d.home, "log", "append", "m", "x")
        samples = 0
        async for name, doc in it:  # bounded by the stream timeout
            if name == "sample":
                samples += 1
            if name == "status" and doc["groups"] and doc["groups"][0]["feeds"][0]["length"] == 1:
                group = doc["groups"][0]
                assert group["name"] == "m" and group["connected"] == []
                assert group["members"] == [{"peer_id": status["peer_id"], "this_device": True}]
                break
        assert samples >= 1
    async with http.get(f"{base}/v1/throughput", headers=auth) as r:
        history = (await r.json())["history"]
    assert history[-1]["groups"]["m"] == {"entries": 1, "bytes": 0}
    assert all(b["t"] >= a["t"] for a, b in itertools.pairwise(history))


async def test_an_open_stream_does_not_hold_up_shutdown(api):
    d, base, auth, http = api
    async with http.get(f"{base}/v1/events", headers=auth, timeout=aiohttp.ClientTimeout(total=20)) as r:
        await anext(events(r))
        started = time.monotonic()
        await d.stop(timeout=15)
        assert time.monotonic() - started < 10
        assert d.proc is not None and d.proc.returncode == 0


async def test_qr_code_of_the_invite_as_svg(api):
    d, base, auth, http = api
    uri = (await ok(d.home, "group", "create", "m")).strip()
    seed_uri = (await ok(d.home, "group", "invite", "m", "--seed")).strip()
    async with http.get(f"{base}/v1/groups/m/qr.svg", headers=auth) as r:
        assert r.status == 200 and r.content_type == "image/svg+xml"
        svg = await r.read()
    assert svg.startswith(b"<svg") and svg == qr_svg(uri)
    async with http.get(f"{base}/v1/groups/m/qr.svg?seed=1", headers=auth) as r:
        assert await r.read() == qr_svg(seed_uri) != svg
    async with http.get(f"{base}/v1/groups/nosuch/qr.svg", headers=auth) as r:
        assert r.status == 404
    async with http.get(f"{base}/v1/groups/m/qr.svg") as r:
        assert r.status == 401
