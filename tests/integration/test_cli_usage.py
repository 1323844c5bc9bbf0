"""The cobox command's rough edges, as a user meets them (issue 18.8, 18.4): each played through
the real command against a real daemon process on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from tests.integration.daemons import ROOT, cli, env, ok


async def raw(*args: str, stdin: bytes | None = None, stdout: int | None = None,
              timeout: float = 60) -> tuple[int, str, str]:
    """``python -m cobox ARGS`` exactly as given (no ``--home`` put first)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cobox", *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=stdout if stdout is not None else asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env(), cwd=ROOT)
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate(stdin)
    return proc.returncode or 0, (out or b"").decode(), err.decode()


async def eventually(check, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)


async def test_global_options_after_the_command_and_a_closed_pipe(daemons):
    a = await daemons("a")
    rc, out, err = await raw("status", "--json", "--home", str(a.home))
    assert rc == 0, err
    assert json.loads(out)["home"] == str(a.home)
    rc, out, err = await raw("group", "list", "--home", str(a.home))
    assert rc == 0 and "no groups" in out, err
    # --home before the command still counts when the subcommand does not repeat it.
    rc, out, _ = await raw("--home", str(a.home), "status", "--json")
    assert rc == 0 and json.loads(out)["home"] == str(a.home)

    # `cobox status --json | head -0`: the reader is gone before cobox writes.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        rc, _, err = await raw("--home", str(a.home), "status", "--json", stdout=write_end)
    finally:
        os.close(write_end)
    assert err == "", err
    assert rc == 141


async def test_peers_add_takes_host_port_and_names_the_expected_form(daemons):
    a, b = await daemons("a"), await daemons("b")
    listening = (await b.status())["listening"][0]  # tcp:127.0.0.1:PORT...
    host_port = listening.split("~")[0].removeprefix("tcp:")
    out = await ok(a.home, "peers", "add", host_port)
    assert out.startswith("connected to ")
    for bad in ("garbage", "127.0.0.1", "127.0.0.1:99999", "http://127.0.0.1:80"):
        rc, _, err = await cli(a.home, "peers", "add", bad)
        assert rc == 1 and "expected HOST:PORT" in err and len(err.strip().splitlines()) == 1, (bad, err)


async def test_seed_uses_the_given_name(daemons):
    a, b = await daemons("a"), await daemons("b")
    await ok(a.home, "group", "create", "photos")
    seed_uri = await ok(a.home, "group", "invite", "photos", "--seed")
    out = await ok(b.home, "seed", "-", "photos-backup", stdin=seed_uri.encode())
    assert "backing up photos-backup" in out
    seeds = json.loads(await ok(b.home, "seed", "list", "--json"))
    assert [s["name"] for s in seeds] == ["photos-backup"]


async def test_log_append_from_stdin_drops_one_trailing_newline(daemons):
    a = await daemons("a")
    await ok(a.home, "group", "create", "g")
    await ok(a.home, "log", "append", "g", "-", stdin=b"one line\n")
    await ok(a.home, "log", "append", "g", "-", stdin=b"two lines\n\n")
    await ok(a.home, "log", "append", "g", "-", stdin=b"no newline")
    texts = [json.loads(line)["text"] for line in (await ok(a.home, "log", "cat", "g", "--json")).splitlines()]
    assert texts == ["one line", "two lines\n", "no newline"]


async def test_folder_history_unknown_file_and_absolute_paths(daemons, tmp_path: Path):
    a = await daemons("a")
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.txt").write_text("hello")
    await ok(a.home, "group", "create", "g")
    await ok(a.home, "folder", "add", "g", str(folder))

    async def imported() -> list | None:
        rc, out, _ = await cli(a.home, "folder", "history", "g", "sub/a.txt", "--json")
        return json.loads(out) if rc == 0 else None

    by_relative = await eventually(imported, "the folder's import")
    by_absolute = json.loads(await ok(a.home, "folder", "history", "g", str(folder / "sub" / "a.txt"), "--json"))
    assert by_absolute == by_relative and len(by_absolute) == 1

    rc, _, err = await cli(a.home, "folder", "history", "g", "nosuch.txt")
    assert rc == 1 and "no file 'nosuch.txt'" in err and len(err.strip().splitlines()) == 1, err
    rc, _, err = await cli(a.home, "folder", "history", "g", str(tmp_path / "elsewhere.txt"))
    assert rc == 1 and "is not inside the folder" in err, err

    out = await ok(a.home, "folder", "restore", "g", str(folder / "sub" / "a.txt"), "--to", str(tmp_path / "copy.txt"))
    assert "restored" in out and (tmp_path / "copy.txt").read_text() == "hello"


async def test_help_has_per_argument_text_and_examples():
    rc, out, _ = await raw("peers", "add", "--help")
    assert rc == 0 and "HOST:PORT" in out and "examples:" in out and "--home" in out
    rc, out, _ = await raw("folder", "history", "--help")
    assert rc == 0 and "absolute path inside it" in out and "examples:" in out
    rc, out, _ = await raw("--help")
    assert rc == 0 and "examples:" in out


async def test_version_and_python_m_cobox():
    rc, out, _ = await raw("--version")
    assert rc == 0 and out.startswith("cobox ") and out.split()[1][0].isdigit()


async def test_an_older_python_is_told_what_is_needed():
    # The guard in cobox/__init__.py runs before anything that needs 3.11: played by making this
    # interpreter report 3.10 before the import.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; sys.version_info = (3, 10, 4); import cobox.cli",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env(), cwd=ROOT)
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert proc.returncode == 1
    assert "cobox needs Python 3.11 or newer; this is Python 3.10.4" in err.decode()


async def test_config_errors_are_one_line_naming_the_key(daemons, tmp_path: Path):
    home = tmp_path / "h"
    rc, _, err = await cli(home, "daemon", "--no-lan", "--no-dht", "--listen", "garbage")
    assert rc == 1 and "--listen (network.listen): 'garbage'" in err and len(err.strip().splitlines()) == 1, err
    rc, _, err = await cli(home, "daemon", "--no-lan", "--no-dht", "--dht-port", "99999")
    assert rc == 1 and "--dht-port (dht.port) = 99999 is not a port" in err, err
    (home / "config.toml").write_text('[log]\nlevel = "verbose"\n')
    rc, _, err = await cli(home, "start")
    assert rc == 1 and "log.level = 'verbose' must be one of" in err and len(err.strip().splitlines()) == 1, err
    (home / "config.toml").write_text('[api]\nhost = "0.0.0.0"\n')
    rc, _, err = await cli(home, "daemon", "--no-lan", "--no-dht")
    assert rc == 1 and "api.allow_remote = true" in err, err


async def test_a_store_of_a_newer_cobox_gives_advice(daemons):
    import sqlite3

    a = await daemons("a")
    await a.stop()
    with sqlite3.connect(a.home / "cobox.db") as db:
        db.execute("PRAGMA user_version = 999")
    rc, _, err = await cli(a.home, "daemon", "--no-lan", "--no-dht", "--listen", "tcp:127.0.0.1:0")
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    assert "schema version 999" in err and "upgrade cobox" in err and "Traceback" not in err


async def test_first_run_ends_with_what_to_do_next(daemons):
    a = await daemons("a")

    async def told() -> bool:
        return "what to do next" in "".join(a.output)

    await eventually(told, "the first-run text")
    text = "".join(a.output)
    assert f"cobox --home {a.home} group create NAME" in text and "back that directory up" in text
    # one format off a terminal, each startup fact said once
    lines = [x for x in text.splitlines() if x.strip()]
    assert all(x.startswith("ts=") for x in lines), [x for x in lines if not x.startswith("ts=")]
    assert sum("listening on tcp:" in x for x in lines) == 1 and sum("control API on http" in x for x in lines) == 1
    await a.stop()
    again = await daemons("a")
    await again.status()  # answered: the start has been printed in full
    await again.stop()
    assert "what to do next" not in "".join(again.output)


async def test_an_added_peer_is_kept_redialled_after_a_restart_and_removed(daemons):
    a, b = await daemons("a"), await daemons("b")
    b_id = (await b.status())["peer_id"]
    await ok(a.home, "peers", "add", await b.address())
    known = json.loads(await ok(a.home, "peers", "--json"))
    assert [p["peer_id"] for p in known] == [b_id]
    await a.stop()
    a = await daemons("a")  # nothing added again: it redials B by itself

    async def connected() -> bool:
        return [p["peer_id"] for p in json.loads(await ok(a.home, "peers", "--json"))] == [b_id]

    await eventually(connected, "A redialling its known peer B")
    out = await ok(a.home, "peers", "remove", b_id[:12])
    assert out.strip() == f"forgot {b_id}"

    async def gone() -> bool:
        return json.loads(await ok(a.home, "peers", "--json")) == []

    await eventually(gone, "the connection to a forgotten peer closed")
    rc, _, err = await cli(a.home, "peers", "remove", b_id[:12])
    assert rc == 1 and "no known peer" in err
