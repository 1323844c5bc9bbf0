"""The control API endpoints the dashboard uses, against a real daemon process on loopback:
login links, session secrets in a header (never a cookie), server-sent events, QR codes."""

from __future__ import annotations

import itertools
import json
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


SESSION = "X-Cobox-Session"


async def login(http: aiohttp.ClientSession, base: str, auth: dict[str, str]) -> dict[str, str]:
    """Log in as the page does (code from the link's fragment -> POST /v1/session); return the
    session header."""
    async with http.post(f"{base}/v1/login-link", headers=auth) as r:
        assert r.status == 201
        link = (await r.json())["url"]
    code = link.split("#code=")[1]
    async with http.post(f"{base}/v1/session", json={"code": code}) as r:
        assert r.status == 201 and "Set-Cookie" not in r.headers
        return {SESSION: (await r.json())["session"]}


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


async def test_login_link_is_single_use_needs_the_token_and_keeps_the_code_in_the_fragment(api):
    d, base, auth, http = api
    async with http.post(f"{base}/v1/login-link") as r:
        assert r.status == 401
    async with http.post(f"{base}/v1/login-link", headers=auth) as r:
        assert r.status == 201
        body = await r.json()
    assert body["url"].startswith(f"{base}/#code=") and body["expires_in"] == 60
    code = body["url"].split("#code=")[1]
    async with http.post(f"{base}/v1/session", json={"code": code}) as r:
        assert r.status == 201 and "Set-Cookie" not in r.headers
        secret = (await r.json())["session"]
    assert secret != code
    async with http.post(f"{base}/v1/session", json={"code": code}) as r:  # used once already
        assert r.status == 401 and "not valid" in (await r.json())["error"]["message"]
    for bad in ({"code": "nonsense"}, {"code": 5}, {}, []):
        async with http.post(f"{base}/v1/session", json=bad) as r:
            assert r.status == 401
    # A page of another origin cannot trade a code, even a good one.
    async with http.post(f"{base}/v1/login-link", headers=auth) as r:
        code = (await r.json())["url"].split("#code=")[1]
    async with http.post(f"{base}/v1/session", json={"code": code}, headers={"Origin": "http://127.0.0.1:1"}) as r:
        assert r.status == 403
    async with http.post(f"{base}/v1/session", json={"code": code}) as r:  # not spent by the refused try
        assert r.status == 201
    # The old query-string login is gone.
    async with http.get(f"{base}/login?code={code}", allow_redirects=False) as r:
        assert r.status in (401, 404) and "Set-Cookie" not in r.headers
    # A session cannot mint login links: that takes the token.
    session = await login(http, base, auth)
    async with http.post(f"{base}/v1/login-link", headers=session) as r:
        assert r.status == 401
    # `cobox open --no-browser` prints a working link; neither it nor the token is logged.
    link = (await ok(d.home, "open", "--no-browser")).strip()
    code = link.split("#code=")[1]
    async with http.post(f"{base}/v1/session", json={"code": code}) as r:
        assert r.status == 201
    token = auth["Authorization"][7:]
    assert not any(code in line or token in line for line in d.output)


async def test_only_the_session_header_authenticates_never_a_cookie(api):
    d, base, auth, http = api
    port = base.rsplit(":", 1)[1]
    async with http.get(f"{base}/v1/status") as r:
        assert r.status == 401
    async with http.get(f"{base}/") as r:  # the page is a shell without data, for anyone
        html = await r.text()
        assert r.status == 200 and "cobox open" in html and "peer" not in html.split("<main>")[0]
    session = await login(http, base, auth)
    secret = session[SESSION]
    async with http.get(f"{base}/v1/status", headers=session) as r:
        assert r.status == 200 and "peer_id" in await r.json()
    async with http.get(f"{base}/static/app.js") as r:  # assets hold no data
        assert r.status == 200 and r.content_type == "text/javascript"
    # The attack of issue 12.16: the secret as a cookie (what another port's server would get) is nothing.
    for name in (f"cobox_session_{port}", "cobox_session", SESSION):
        cookie = {"Cookie": f"{name}={secret}"}
        async with http.get(f"{base}/v1/groups", headers=cookie) as r:
            assert r.status == 401
        async with http.post(f"{base}/v1/groups", headers=cookie, json={"name": "evil"}) as r:
            assert r.status == 401
    # A changing request with the header needs nothing more; from another origin it is refused.
    for origin in ("http://evil.example", f"http://127.0.0.1:{int(port) + 1}", "null"):
        async with http.post(f"{base}/v1/groups", headers={**session, "Origin": origin}, json={"name": "m"}) as r:
            assert r.status == 403 and (await r.json())["error"]["code"] == "foreign_origin"
        async with http.get(f"{base}/v1/groups", headers={**session, "Origin": origin}) as r:
            assert r.status == 403
    async with http.post(f"{base}/v1/groups", headers={**session, "Origin": base}, json={"name": "m"}) as r:
        assert r.status == 201 and (await r.json())["invite"].startswith("cobox://join/")
    async with http.post(f"{base}/v1/groups/join", headers=session, json={"uri": "cobox://join/abc"}) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_uri"
    assert [g["name"] for g in json.loads(await ok(d.home, "group", "list", "--json"))] == ["m"]
    # The session counts only for this port on loopback (no DNS rebinding).
    async with http.get(f"{base}/v1/status", headers={**session, "Host": f"evil.example:{port}"}) as r:
        assert r.status == 401
    # Logging out ends the session.
    async with http.post(f"{base}/v1/logout", headers=session) as r:
        assert r.status == 200
    async with http.get(f"{base}/v1/status", headers=session) as r:
        assert r.status == 401


async def test_the_event_stream_takes_the_session_header(api):
    d, base, auth, http = api
    session = await login(http, base, auth)
    async with http.get(f"{base}/v1/events", headers={"Cookie": f"x={session[SESSION]}"}) as r:
        assert r.status == 401
    async with http.get(f"{base}/v1/events", headers=session, timeout=aiohttp.ClientTimeout(total=20)) as r:
        assert r.status == 200
        name, _ = await anext(events(r))
        assert name == "throughput"
        async with http.post(f"{base}/v1/logout", headers=session) as out:
            assert out.status == 200
        async for name, _ in events(r):  # bounded by the timeout: the stream says so and ends
            if name == "logout":
                break


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
            # two entries: the device's profile (cobox.devices) and the log entry
            if name == "status" and doc["groups"] and doc["groups"][0]["feeds"][0]["length"] == 2:
                group = doc["groups"][0]
                assert group["name"] == "m" and group["connected"] == []
                assert group["members"] == [{"peer_id": status["peer_id"], "this_device": True,
                                             "name": status["name"]}]
                break
        assert samples >= 1
    async with http.get(f"{base}/v1/throughput", headers=auth) as r:
        history = (await r.json())["history"]
    assert history[-1]["groups"]["m"] == {"entries": 2, "bytes": 0}
    assert all(b["t"] >= a["t"] for a, b in itertools.pairwise(history))


async def test_an_open_stream_does_not_hold_up_shutdown(api):
    d, base, auth, http = api
    async with http.get(f"{base}/v1/events", headers=auth, timeout=aiohttp.ClientTimeout(total=20)) as r:
        await anext(events(r))
        await d.stop(timeout=10)  # a stop hanging on the stream is killed at the timeout: not 0
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
    async with http.get(f"{base}/v1/groups/m/qr.svg", headers=await login(http, base, auth)) as r:
        assert r.status == 200 and await r.read() == svg
