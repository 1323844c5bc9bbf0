"""Another user on the same machine (issue 12, items 17 and 18): what the process list shows
gives nothing, and the home gives nothing either.

- ``cobox open``: the browser is started with a path to a 0600 page in the 0700 home; a snooper
  that tries every string of every command line on ``POST /v1/session`` is refused, and the real
  user's login still works afterwards (the snooper did not spend the code).
- ``group join`` and ``seed`` take the URI on stdin, or ask for it on a terminal without echo.
- A home made 0755 (with 0644 files in it) is tightened at the daemon's start, said once in the
  log; after a run every directory in it is 0700 and every file 0600, ``daemon.log`` included.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import pty
import re
import select
import stat
import sys
from pathlib import Path

import aiohttp

from tests.integration.browser import browser_argv, fake_browser
from tests.integration.daemons import ROOT, cli, env, ok

NO_NETWORK_CONFIG = '[lan]\nenabled = false\n[dht]\nenabled = false\n[network]\nlisten = ["tcp:127.0.0.1:0"]\n'


async def test_what_the_process_list_shows_of_cobox_open_cannot_log_in(daemons, tmp_path, monkeypatch):
    a = await daemons("a")
    port = (await a.status())["api"]["port"]
    base = f"http://127.0.0.1:{port}"
    argv_file = fake_browser(tmp_path, monkeypatch)
    cli_argv = ["cobox", "--home", str(a.home), "open"]
    rc, out, err = await cli(a.home, "open")
    assert rc == 0, err
    argv = await browser_argv(argv_file)
    page = a.home / "dashboard-login.html"
    assert argv == [page.as_uri()]
    assert stat.S_IMODE(page.stat().st_mode) == 0o600 and stat.S_IMODE(a.home.stat().st_mode) == 0o700

    # The snooper: every command line it saw, whole and in pieces, as a login code.
    seen = cli_argv + argv
    guesses = set(seen) | {piece for s in seen for piece in re.split(r"[/#=?:.&]", s) if piece}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15),
                                     cookie_jar=aiohttp.DummyCookieJar()) as http:
        for guess in sorted(guesses):
            async with http.post(f"{base}/v1/session", json={"code": guess}) as r:
                assert r.status == 401, guess
        # The user's browser reads the page (the snooper cannot: 0600 in a 0700 home) and logs in.
        link = html.unescape(re.search(r'url=([^"]+)"', page.read_text()).group(1))  # type: ignore[union-attr]
        assert link.startswith(f"{base}/#code=")
        code = link.split("#code=")[1]
        assert not any(code in s for s in seen) and code not in out and code not in err
        async with http.post(f"{base}/v1/session", json={"code": code}) as r:
            assert r.status == 201
    assert not any(code in line for line in a.output)


async def test_group_join_and_seed_read_the_uri_from_stdin(daemons):
    a, b, c = await daemons("a"), await daemons("b"), await daemons("c")
    uri = (await ok(a.home, "group", "create", "g")).strip()
    seed_uri = (await ok(a.home, "group", "invite", "g", "--seed")).strip()
    assert "joined g (member)" in await ok(b.home, "group", "join", stdin=uri.encode() + b"\n")
    assert "backing up seed-" in await ok(c.home, "seed", "-", stdin=seed_uri.encode() + b"\n")
    seeds = json.loads(await ok(c.home, "seed", "list", "--json"))
    assert [g["role"] for g in seeds] == ["seed"]
    await ok(b.home, "group", "leave", "g", "--yes")
    assert "joined g (member)" in await ok(b.home, "group", "join", "-", "--name", "g", stdin=uri.encode())
    await ok(c.home, "seed", "remove", seeds[0]["name"], "--yes")
    assert "backing up seed-" in await ok(c.home, "seed", stdin=seed_uri.encode())
    for args in (("group", "join"), ("seed",)):
        rc, _, err = await cli(b.home, *args, stdin=b"")
        assert rc == 1 and "no invite URI given" in err, err
    rc, _, err = await cli(c.home, "seed", stdin=uri.encode())  # a member invite is not a seed
    assert rc == 1 and "not a backup-peer invite" in err


def read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    """What the terminal shows, up to ``marker`` (or the end, with ``marker=b""``)."""
    got = b""
    while not marker or marker not in got:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            raise AssertionError(f"the terminal showed no {marker!r} within {timeout}s: {got!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side is closed
            chunk = b""
        if not chunk:
            if marker:
                raise AssertionError(f"the terminal closed before {marker!r}: {got!r}")
            return got
        got += chunk
    return got


async def test_group_join_asks_for_the_uri_on_a_terminal_without_echo(daemons):
    a, b = await daemons("a"), await daemons("b")
    uri = (await ok(a.home, "group", "create", "g")).strip()
    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cobox.cli", "--home", str(b.home), "group", "join",
        stdin=slave, stdout=asyncio.subprocess.PIPE, stderr=slave, env=env(), cwd=ROOT, start_new_session=True)
    os.close(slave)
    try:
        shown = await asyncio.to_thread(read_until, master, b"(not shown): ", 20)
        os.write(master, uri.encode() + b"\n")
        async with asyncio.timeout(30):
            out = await proc.stdout.read()  # type: ignore[union-attr]
            await proc.wait()
        shown += await asyncio.to_thread(read_until, master, b"", 5)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)
    assert proc.returncode == 0 and b"joined g (member)" in out
    assert b"invite URI" in shown and uri.encode() not in shown and uri.encode()[-12:] not in shown


def modes(home: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(home.stat().st_mode)}
    for top, dirs, files in os.walk(home):
        for name in dirs + files:
            path = Path(top, name)
            out[str(path.relative_to(home))] = stat.S_IMODE(path.lstat().st_mode)
    return out


async def test_a_loose_home_is_tightened_once_and_every_file_in_it_is_0600(tmp_path, monkeypatch):
    home = tmp_path / "h"
    home.mkdir()
    (home / "config.toml").write_text(NO_NETWORK_CONFIG)
    (home / "notes").mkdir()
    (home / "notes" / "old.txt").write_text("x")
    for path, mode in ((home, 0o755), (home / "config.toml", 0o644), (home / "notes", 0o755),
                       (home / "notes" / "old.txt", 0o644)):
        path.chmod(mode)
    fake_browser(tmp_path, monkeypatch)
    try:
        for run in range(2):  # the second run finds nothing to tighten
            await ok(home, "start")
            await ok(home, "group", "create", f"g{run}")  # database, blobs and keys get written
            await ok(home, "log", "append", f"g{run}", "x" * 20_000)
            await ok(home, "open")  # the login page
            await ok(home, "stop")
    finally:
        await cli(home, "stop")
    found = modes(home)
    assert {"daemon.log", "cobox.db", "identity.key", "api.token", "dashboard-login.html",
            "config.toml", "notes/old.txt"} <= set(found), found
    wrong = {path: f"{mode:04o}" for path, mode in found.items()
             if mode != (0o700 if (home / path).is_dir() else 0o600)}
    assert not wrong, wrong
    log = (home / "daemon.log").read_text()
    assert log.count("was open to other users") == 1, log
    assert "0755 -> 0700" in log

