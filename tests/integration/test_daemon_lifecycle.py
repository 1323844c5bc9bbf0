"""The daemon's life under its supervisor: every service is seen in ``status``, ``stop()``
leaves no task behind, a failing service restarts with backoff and shows its error, and a
store writer that dies stops the daemon with a non-zero exit and a one-line message."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

from cobox import config as configuration
from cobox.commands import show_status
from cobox.daemon import Daemon
from cobox.main import control_plane
from cobox.supervisor import Backoff
from tests.helpers import until
from tests.integration.daemons import ROOT, cli, env, ok

FAST = Backoff(base=0.05, factor=2.0, cap=0.2, jitter=0.5, reset_after=60.0)


def in_process(home: Path, *, dht: bool = True) -> Daemon:
    overrides = {
        "network": {"listen": ["tcp:127.0.0.1:0"]},
        "api": {"port": 0},
        "dht": {"enabled": dht, "host": "127.0.0.1", "port": 0, "bootstrap": [], "allow_loopback": True},
        "lan": {"enabled": False},
    }
    return Daemon(home, configuration.load(home, overrides=overrides), backoff=FAST, api_factory=control_plane)


def services(d: Daemon) -> dict[str, dict]:
    return {s["name"]: s for s in d.api.status_doc()["services"]}


async def test_stop_leaves_no_task_behind(tmp_path):
    before = asyncio.all_tasks()
    a, b = in_process(tmp_path / "a"), in_process(tmp_path / "b")
    await a.start()
    await b.start()
    group = await a.create_group("g")
    await group.append("hello")
    (tmp_path / "fa").mkdir()
    (tmp_path / "fa" / "note.txt").write_text("a file\n")
    await a.add_folder("g", str(tmp_path / "fa"))
    joined = await b.add_group("g", group.keys)
    await b.connect(a.listen_addresses[0])  # peers, channels and replication tasks too
    await until(lambda: any(f.length for f in joined.feeds()), timeout=20, what="b to replicate a's entry")
    await a.create_group("short-lived")
    await a.leave_group("short-lived")
    await until(lambda: a.folders["g"].rounds > 0, timeout=20, what="a folder round")

    names = services(a)
    assert {"store", "node", "dht", "swarm", "receipts:g", "audits:g", "folder:g", "api"} <= set(names)
    assert "receipts:short-lived" not in names  # left: its services were stopped and forgotten
    topic = f"swarm:{group.discovery_key.hex()[:16]}"
    assert [n for n in names if n.startswith("swarm:")] == [topic]  # one topic loop per joined group
    assert all(s["state"] == "running" and s["restarts"] == 0 and s["last_error"] == "" for s in names.values())
    assert names["store"]["fatal"] and not names["folder:g"]["fatal"]

    a.stop()
    b.stop()
    async with asyncio.timeout(30):
        await asyncio.gather(a.serve(), b.serve())
    left = asyncio.all_tasks() - before
    assert not left, sorted(t.get_name() for t in left)
    assert all(s.state == "stopped" for s in a.supervisor.status())


async def test_a_failing_folder_restarts_with_backoff_and_shows_last_error(tmp_path, capsys):
    home, folder = tmp_path / "a", tmp_path / "shared"
    folder.mkdir()
    d = in_process(home, dht=False)
    await d.start()
    await d.create_group("g")
    await d.add_folder("g", str(folder))
    d.stop()
    async with asyncio.timeout(30):
        await d.serve()

    folder.rename(tmp_path / "gone")  # the folder's directory disappears while the daemon is down
    d = in_process(home, dht=False)
    await d.start()
    try:
        await until(lambda: (services(d)["folder:g"]["restarts"] >= 2), timeout=20,
                    what="the folder service to be restarted twice")
        svc = services(d)["folder:g"]
        assert svc["state"] in ("backoff", "running")
        assert "is not a directory" in svc["last_error"]
        assert services(d)["store"]["state"] == "running"  # nothing else is affected
        capsys.readouterr()
        show_status(d.api.status_doc(), as_json=False)
        line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("folder:g"))
        assert "restarts, last error: " in line and "is not a directory" in line, line

        (tmp_path / "gone").rename(folder)  # it comes back: the next restart starts it
        await until(lambda: d.folders["g"].rounds > 0, timeout=20, what="the folder to run again")
        assert services(d)["folder:g"]["state"] == "running"
    finally:
        d.stop()
        async with asyncio.timeout(30):
            await d.serve()


async def test_a_dying_store_writer_fails_writes_fast_and_stops_the_daemon_non_zero(tmp_path):
    home = tmp_path / "a"
    home.mkdir()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.fatal_writer", "--home", str(home), "daemon",
        "--listen", "tcp:127.0.0.1:0", "--no-dht", "--no-lan",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env(), cwd=ROOT)
    try:
        async with asyncio.timeout(30):
            while b"running" not in (line := await proc.stdout.readline()):  # type: ignore[union-attr]
                assert line, "the daemon exited at start"
        await ok(home, "group", "create", "g")
        await ok(home, "log", "append", "g", "before the fault")
        (home / "trip").touch()
        # The write fails at once with the storage error instead of hanging.
        rc, _out, err = await cli(home, "log", "append", "g", "after the fault", timeout=30)
        assert rc != 0, err
        async with asyncio.timeout(30):
            out, err_bytes = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 1
    last = err_bytes.decode().strip().splitlines()[-1]
    assert last.startswith("cobox: store failed: ") and last.endswith("the daemon stopped"), last
    assert "abort callback" in last
    # The lock is released: a new daemon can start on this home (and reads what was committed).
    (home / "trip").unlink()
    d = in_process(home, dht=False)
    await d.start()
    try:
        entries = await d.group("g").log()
        assert [e.text for e in entries] == ["before the fault"]
    finally:
        d.stop()
        async with asyncio.timeout(30):
            await d.serve()


async def test_a_daemon_that_cannot_start_leaves_nothing_running(tmp_path):
    before = asyncio.all_tasks()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    home = tmp_path / "a"
    try:
        d = in_process(home)
        d.config = d.config.replace("network", listen=("tcp:127.0.0.1:0", f"tcp:127.0.0.1:{port}"))  # 2nd is taken
        with pytest.raises(OSError):
            await d.start()
    finally:
        taken.close()
    left = asyncio.all_tasks() - before
    assert not left, sorted(t.get_name() for t in left)
    assert [s.state for s in d.supervisor.status()] == ["stopped", "stopped"]  # store and node, closed
    again = in_process(home)  # the lock was released
    await again.start()
    again.stop()
    async with asyncio.timeout(30):
        await again.serve()
