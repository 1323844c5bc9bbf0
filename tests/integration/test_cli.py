"""End to end through the cobox command, with real daemon processes on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys

import aiohttp

from tests.integration.daemons import ROOT, cli, env, ok, poll


async def log_texts(home) -> list[str]:
    return [json.loads(line)["text"] for line in (await ok(home, "log", "cat", "g", "--json")).splitlines()]


async def log_becomes(home, expected: list[str], timeout: float = 30.0) -> list[str]:
    """The log's texts once they are ``expected`` (polled for at most ``timeout`` s), else the last
    ones read. Right after ``sync wait`` an entry just appended on another device may still be on
    its way: ``sync wait`` cannot wait for an entry it has not heard of yet."""
    seen: list[str] = []

    async def check() -> bool:
        seen[:] = await log_texts(home)
        return seen == expected

    await poll(check, timeout)
    return seen


async def test_two_devices_share_a_log_and_survive_a_kill(daemons, tmp_path):
    a, b = await daemons("a"), await daemons("b")
    uri = (await ok(a.home, "group", "create", "g")).strip()
    assert uri.startswith("cobox://join/")
    assert "joined g (member)" in await ok(b.home, "group", "join", uri)
    await ok(b.home, "peers", "add", await a.address())
    await ok(a.home, "log", "append", "g", "from a")
    await ok(b.home, "sync", "wait", "g", "--timeout", "20")
    assert await log_becomes(b.home, ["from a"]) == ["from a"]
    await ok(b.home, "log", "append", "g", "-", stdin=b"from b via stdin")
    await ok(a.home, "sync", "wait", "g", "--timeout", "20")
    assert await log_becomes(a.home, ["from a", "from b via stdin"]) == ["from a", "from b via stdin"]

    # B is killed; A writes meanwhile; B restarts with everything and catches up.
    await b.kill()
    await ok(a.home, "log", "append", "g", "while b was down")
    b = await daemons("b")
    # everything B had survived the kill (and B redials A, its known peer, by itself)
    assert {"from a", "from b via stdin"} <= set(await log_texts(b.home))
    await ok(b.home, "sync", "wait", "g", "--timeout", "20")
    assert await log_texts(b.home) == ["from a", "from b via stdin", "while b was down"]

    # A third device joins late and catches up with everything.
    c = await daemons("c")
    await ok(c.home, "group", "join", uri, "--name", "g")
    await ok(c.home, "peers", "add", await b.address())
    await ok(c.home, "sync", "wait", "g", "--timeout", "20")
    assert await log_texts(c.home) == ["from a", "from b via stdin", "while b was down"]
    groups = json.loads(await ok(c.home, "group", "list", "--json"))
    assert groups[0]["name"] == "g" and len(groups[0]["feeds"]) == 3


async def test_bad_input_gives_one_line_and_the_right_exit_code(daemons, tmp_path):
    a = await daemons("a")
    for uri in ("cobox://join/abc", "https://example.org", "cobox://nope/x", "cobox://join/"):
        rc, out, err = await cli(a.home, "group", "join", uri)
        assert rc == 1 and err.startswith("cobox: ") and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
    rc, _, err = await cli(a.home, "log", "append", "nosuch", "x")
    assert rc == 1 and "no group named 'nosuch'" in err
    rc, _, err = await cli(a.home, "group", "frobnicate")
    assert rc == 2
    rc, _, err = await cli(tmp_path / "nobody", "status")
    assert rc == 1 and "no cobox daemon is running" in err
    # A second daemon on the same home refuses.
    rc, _, err = await cli(a.home, "daemon", "--no-lan", "--no-dht", "--listen", "tcp:127.0.0.1:0")
    assert rc == 1 and "another cobox daemon is running" in err


async def test_invalid_config_is_named_and_kept(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    (home / "config.toml").write_text('[api]\nport = "eighty"\n')
    rc, _, err = await cli(home, "daemon", "--no-lan", "--no-dht")
    assert rc == 1 and "api.port" in err and "config.toml" in err
    (home / "config.toml").write_text("[api\n")
    rc, _, err = await cli(home, "start")
    assert rc == 1 and "not valid TOML" in err
    assert (home / "config.toml").read_text() == "[api\n"
    (home / "config.toml").write_text("[nonsense]\nx = 1\n")
    rc, _, err = await cli(home, "daemon")
    assert rc == 1 and "unknown section [nonsense]" in err


async def test_api_token_modes_openapi_and_metrics(daemons):
    a = await daemons("a")
    s = await a.status()
    port = s["api"]["port"]
    for path in ("api.token", "api.sock", "identity.key", "cobox.db"):
        assert stat.S_IMODE(os.stat(a.home / path).st_mode) == 0o600, path
    token = (a.home / "api.token").read_text().strip()
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            async with http.get(f"{base}/v1/status", headers=headers) as r:
                assert r.status == 401
                assert (await r.json())["error"]["code"] == "unauthorized"
        auth = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{base}/openapi.json", headers=auth) as r:
            spec = await r.json()
            assert spec["openapi"].startswith("3.") and "/v1/groups/{name}/log" in spec["paths"]
        async with http.post(f"{base}/v1/groups", headers=auth, json={"name": "m"}) as r:
            assert r.status == 201
        async with http.post(f"{base}/v1/groups/m/log", headers=auth, json={"text": "x"}) as r:
            assert r.status == 201
        async with http.post(f"{base}/v1/groups", headers=auth, json={"name": "m"}) as r:
            assert r.status == 409 and (await r.json())["error"]["code"] == "group_exists"
        async with http.post(f"{base}/v1/groups", headers=auth, data=b"{not json") as r:
            assert r.status == 400
        async with http.get(f"{base}/v1/groups/zzz", headers=auth) as r:
            assert r.status == 404
        async with http.get(f"{base}/metrics", headers=auth) as r:
            text = await r.text()
            # two entries: the device's profile (its name in the group, cobox.devices) and the log entry
            assert "cobox_groups 1.0" in text and 'cobox_group_entries{group="m"} 2.0' in text
            assert "# TYPE cobox_group_records_refused_total counter" in text
    # The token never shows up in the daemon's output.
    assert not any(token in line for line in a.output)


async def test_lan_discovery_connects_two_daemons_without_any_address(daemons):
    a, b = await daemons("a", ["--no-dht"]), await daemons("b", ["--no-dht"])
    uri = (await ok(a.home, "group", "create", "g")).strip()
    await ok(a.home, "log", "append", "g", "found on the lan")
    await ok(b.home, "group", "join", uri)
    await ok(b.home, "sync", "wait", "g", "--timeout", "30")
    assert await log_texts(b.home) == ["found on the lan"]
    assert (await b.status())["lan"]["enabled"]


async def test_demo_runs_three_daemons_and_cleans_up():
    import asyncio
    import sys

    from tests.integration.daemons import ROOT, env

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cobox.cli", "demo", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env(), cwd=ROOT)
    async with asyncio.timeout(120):
        out, err = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert text.count("on all 3 devices") == 6
    assert "hello #1 from carol" in text and "removed their homes" in text


async def test_log_cat_follow_streams_new_entries(daemons):
    import asyncio
    import sys

    from tests.integration.daemons import ROOT, env

    a = await daemons("a")
    await ok(a.home, "group", "create", "g")
    await ok(a.home, "log", "append", "g", "first")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cobox.cli", "--home", str(a.home), "log", "cat", "g", "--json", "--follow",
        stdout=asyncio.subprocess.PIPE, env=env(), cwd=ROOT)
    try:
        async with asyncio.timeout(20):
            assert json.loads(await proc.stdout.readline())["text"] == "first"
            await ok(a.home, "log", "append", "g", "second")
            entry = json.loads(await proc.stdout.readline())
            assert entry["text"] == "second" and entry["seq"] == 2  # entry 0: the device's profile
            assert set(entry) == {"feed", "seq", "author", "time", "text"}
    finally:
        proc.kill()
        await proc.wait()


async def test_stop_returns_soon_whatever_follow_clients_are_connected(daemons):
    """Issue 18.6: one ``log cat --follow`` client interrupted, one still connected; ``cobox stop``
    returns within a bound (before, the open stream held the daemon's shutdown for a minute)."""
    a = await daemons("a")
    await ok(a.home, "group", "create", "g")
    await ok(a.home, "log", "append", "g", "first")
    followers = []
    for _ in range(2):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cobox.cli", "--home", str(a.home), "log", "cat", "g", "--follow",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env(), cwd=ROOT)
        followers.append(proc)
        async with asyncio.timeout(30):
            assert b"first" in await proc.stdout.readline()  # type: ignore[union-attr]
    interrupted, connected = followers
    interrupted.send_signal(signal.SIGINT)
    async with asyncio.timeout(30):
        assert await interrupted.wait() == 130
    # a stop that waited out aiohttp's 60 s shutdown would run past this timeout and fail
    rc, out, err = await cli(a.home, "stop", timeout=20)
    assert rc == 0 and "daemon stopped" in out, err
    async with asyncio.timeout(30):
        _, err_bytes = await connected.communicate()
    assert connected.returncode == 1 and "daemon stopped" in err_bytes.decode()
